"""A real single-node SLURM cluster (Debian's slurmctld + slurmd + munge) for the tests.

Follows ../shared/slurm-single-node.md: the configuration must sit at Slurm's default path
(/etc/slurm/slurm.conf: the jobstep plugin drops SLURM_CONF), no accounting database (so the
profile asks squeue for job states), MinJobAge above the plugin's threshold. Needs root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SLURM_CONF = """\
ClusterName=entcaltest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={w}/munge/munge.socket.2
StateSaveLocation={w}/state/ctld
SlurmdSpoolDir={w}/state/d
SlurmctldPidFile={w}/run/slurmctld.pid
SlurmdPidFile={w}/run/slurmd.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MinJobAge=300
NodeName={host} CPUs={cpus} RealMemory=64000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
BINARIES = ["slurmctld", "slurmd", "munged", "sinfo", "sbatch", "squeue"]
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root (the daemons run as root)"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (
            f"Debian packages slurmctld slurmd slurm-client munge not installed (missing {missing}); "
            ".ci/run installs them"
        )
    if DEFAULT_CONF.exists() and not DEFAULT_CONF.is_symlink():
        return f"{DEFAULT_CONF} exists and is not ours: refusing to replace a real cluster's configuration"
    return None


class Cluster:
    def __init__(self, workdir: Path):
        self.w = Path(workdir).resolve()
        self.host = socket.gethostname()

    def start(self, timeout: float = 60) -> None:
        w = self.w
        for d in ("etc", "state/ctld", "state/d", "log", "run", "munge"):
            (w / d).mkdir(parents=True, exist_ok=True)
        shutil.chown(w / "munge", "munge", "munge")
        conf = w / "etc" / "slurm.conf"
        conf.write_text(SLURM_CONF.format(host=self.host, w=w, cpus=os.cpu_count() or 2))
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        if DEFAULT_CONF.is_symlink():
            DEFAULT_CONF.unlink()
        DEFAULT_CONF.symlink_to(conf)
        subprocess.run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                f"--socket={w}/munge/munge.socket.2",
                f"--pid-file={w}/munge/munged.pid",
                f"--log-file={w}/munge/munged.log",
                f"--seed-file={w}/munge/munged.seed",
            ],
            check=True,
        )
        subprocess.run(["slurmctld"], check=True)
        subprocess.run(["slurmd"], check=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
            if r.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SLURM node never became idle; logs in {w / 'log'}")

    def stop(self) -> None:
        for pid_file in (
            self.w / "run" / "slurmd.pid",
            self.w / "run" / "slurmctld.pid",
            self.w / "munge" / "munged.pid",
        ):
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        if DEFAULT_CONF.is_symlink() and Path(os.readlink(DEFAULT_CONF)).resolve().is_relative_to(self.w):
            DEFAULT_CONF.unlink()
