"""A run's life around its jobs, for the Snakefile: what every rule gets besides its own inputs (its rerun flag and
its code fingerprint), the checks at load (GPUs, contexts, provenance, records), and the hooks (onstart: the
results folder's lock, SIGTERM, the job environment, damaged inputs; onsuccess and onerror: the provenance marker,
the tables of the finished jobs). ``rules/common.smk`` makes one :class:`Run`; the Snakefile calls it.

Snakemake's objects (``workflow``, ``rules``, ``logger``) are passed in; nothing here runs at import.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from snakemake.exceptions import WorkflowError

from entcal.aggregate import aggregate, split_finished
from entcal.files import ResultsLockedError, check_existing, lock_results_dir
from entcal.grid import PARTS, part_kind
from entcal.plan import gpu_shortfall
from entcal.model_shapes import context_problems
from entcal.profile import job_venv_problem
from entcal.provenance import (
    ensure_flags,
    raise_flags,
    rerun_flag,
    stale_stages,
    unrecorded_results,
    write_marker,
)
from entcal.records import digest, from_the_future, mark_stale, redo, survey, write_record

# Downloads carry a rerun flag only for entcal.records (a folder not what its job wrote is redone); a changed setting
# or code never redoes them: their folders are keyed by their source (entcal.grid) and checked by content.
DOWNLOAD_RULES = frozenset({"download_model", "download_dataset", "download_featurizer"})
# rules without a rerun flag: the default target, and the table of benchmark records (remade after every run)
NO_FLAG = frozenset({"all", "benchmark_table"})
# rules with a rerun flag but no code fingerprint: downloads, and dump_config (which records every fingerprint)
NO_CODE = DOWNLOAD_RULES | {"dump_config"}


def cli_forced(names, argv=None) -> bool:
    """Whether the command line asks for --forceall (-F), or --forcerun (-R) with one of ``names``: read from the
    main process's arguments, because Snakemake fills in its DAG settings only after the Snakefile is read."""
    args = (sys.argv if argv is None else argv)[1:]
    if "-F" in args or "--forceall" in args:
        return True
    values, taking = [], False
    for a in args:
        if a in ("-R", "--forcerun"):
            taking = True
        elif a.startswith("--forcerun="):
            values.append(a.split("=", 1)[1])
        elif a.startswith("-"):
            taking = False
        elif taking:
            values.append(a)
    want = set(names) | {os.path.abspath(n) for n in names}
    return any(v in want or os.path.abspath(v) in want for v in values)


class Run:
    """One run of the workflow in this process: ``workflow``, ``rules`` and ``logger`` are Snakemake's, ``grid`` the
    run's entcal.grid.Grid, ``code`` the stages' fingerprints, ``provenance`` what dump_config records, ``shapes`` the
    model shapes of the cost plan (a callable, read when first needed), ``workflow_dir`` this workflow's folder."""

    def __init__(self, workflow, rules, logger, config, grid, code, provenance, shapes, workflow_dir):
        self.workflow, self.rules, self.logger, self.config, self.grid = workflow, rules, logger, config, grid
        self.code, self.provenance, self.shapes, self.workflow_dir = code, provenance, shapes, workflow_dir
        self.rd = grid.rd
        self.flagged: set[str] = set()  # rules with a rerun flag (attach_stage_inputs)
        self.terminated: list[float] = []  # times this run received SIGTERM (scancel, a time limit, kill)
        self.damaged: dict = {}  # outputs whose content is not what their job wrote (check_records)

    # -- every rule's stage inputs ---------------------------------------------------------------------------
    def own_rules(self):
        """(name, Rule) of every rule this workflow defines (also where another workflow imports them as a module):
        the rules whose Snakefile is under this workflow's folder."""
        root = os.path.join(os.path.realpath(self.workflow_dir), "")
        for rule in self.workflow.rules:
            if os.path.realpath(str(rule.snakefile)).startswith(root):
                yield rule.name, rule

    def attach_stage_inputs(self) -> None:
        """After every rule is defined: each rule gets its rerun flag as the input ``rerun`` (entcal.provenance: kept
        at time 0 and rewritten, with the reasons, where results outlived their record, so that those jobs and what
        follows run again) and its adapter's code fingerprint as the param ``code`` (entcal.fingerprint: a change to
        the code a stage runs reruns exactly that stage and what follows). Here, once, instead of in each rule."""
        for name, rule in self.own_rules():
            if name in NO_FLAG:
                continue
            self.flagged.add(name)
            if rule.input_modifier is None:  # a rule without an input block of its own: the one every rule gets
                rule.input_modifier = self.workflow.modifier.path_modifier
            rule.set_input(rerun=str(rerun_flag(self.rd, name)))
            if name not in NO_CODE:
                rule.set_params(code=self.code[self.script_stem(rule)])

    @staticmethod
    def script_stem(rule) -> str:
        """The code fingerprint's key of a rule: its adapter's file name (score_extra, made from score by `use`,
        runs score.py)."""
        return os.path.splitext(os.path.basename(rule.script))[0] if rule.script else rule.name

    def rule_scripts(self) -> dict:
        """{rule: adapter stem} of every rule with a rerun flag and a code fingerprint."""
        return {name: self.script_stem(rule) for name, rule in self.own_rules() if name in self.flagged - NO_CODE}

    # -- at load ----------------------------------------------------------------------------------------------
    def check_gpus(self) -> None:
        """On a workstation whose profile declares its GPUs (resources: gpu, profiles/local): every model whose jobs
        need more GPUs than that is named with the fix, before Snakemake stops at its first such job."""
        have = self.workflow.global_resources.get("gpu")
        have = getattr(have, "value", have)
        if self.config["device"] == "cpu" or not isinstance(have, int) or self.workflow.remote_exec:
            return
        if problems := gpu_shortfall(self.config, self.shapes(), have):
            raise WorkflowError(f"this machine has {have} GPUs (resources: gpu):\n  " + "\n  ".join(problems))

    def check_contexts(self) -> None:
        """Every model whose context (its config.json, or config/model_shapes.yaml before the download) cannot hold
        the prompt plus its generation stops the run, naming the model and the fix (entcal.plan)."""
        if problems := context_problems(self.config, self.shapes()):
            raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))

    def check_provenance(self) -> None:
        """Where Snakemake has no record of this results folder (a deleted .snakemake, a fresh clone, a moved or copied
        folder), compare the recorded configuration and code with the current ones and raise the rerun flags of the
        stages that changed, saying which and why."""
        if not self.workflow.is_main_process:
            return
        rd = self.rd
        ensure_flags(rd, self.flagged)
        if unrecorded_results(os.getcwd(), rd) and not cli_forced({"dump_config", os.path.join(rd, "provenance.json")}):
            raise WorkflowError(self.no_provenance_message() + ".")
        try:
            stale, checked = stale_stages(os.getcwd(), rd, self.provenance, self.rule_scripts())
        except ValueError as err:
            raise WorkflowError(str(err)) from None
        if stale:
            stale["dump_config"] = ["records the configuration and code of the rerun"]
            raise_flags(rd, stale)
            self.logger.warning(
                f"{rd} holds results that Snakemake has no record of (no .snakemake metadata for them here: a deleted "
                ".snakemake, a fresh clone or a moved or copied results folder), and they were made with other "
                "settings or code than now. These stages (and what follows from them) run again:\n"
                + "\n".join(
                    f"  {r}: " + "; ".join(v[:4]) + (f"; and {len(v) - 4} more" if len(v) > 4 else "")
                    for r, v in sorted(stale.items())
                )
                + f"\n(the reasons are kept in {rd}/provenance/rerun/<rule>)"
            )
        elif checked:
            self.logger.info(
                f"{rd}: no Snakemake record here, but its provenance.json matches this configuration and code: kept"
            )

    def no_provenance_message(self) -> str:
        rd = self.rd
        found = ", ".join(map(str, unrecorded_results(os.getcwd(), rd)))
        return (
            f"{rd}/provenance.json is missing, but {rd} holds results ({found}, ...): without it the configuration "
            "and code they were made with are unknown, so none of them can be taken as current. Restore "
            "provenance.json (from a backup, or from the folder you copied these results from), or rerun everything "
            "(add --forceall), or, if you know these results match this configuration and code, record them as they "
            "are (add --forcerun dump_config)"
        )

    def check_records(self) -> None:
        """After check_provenance: every recorded output of this run's folders (results_dir, the downloads) is
        compared with its record (entcal.records). Outputs made from an input whose content changed since are made
        stale, so their jobs and what follows run again, and the log says which and why; outputs whose own content
        changed (cut short, edited, a weight file rewritten in place) are named now, and their jobs are put in the
        DAG too (so that onstart runs): onstart refuses them, before any job runs or anything is deleted, unless the
        command asks for them to be redone (--forcerun with the file or its rule, --forceall)."""
        if not self.workflow.is_main_process:
            return
        rd, downloads = self.rd, self.grid.download_folders()
        if ahead := from_the_future([rd], downloads):
            raise WorkflowError(
                f"{len(ahead)} results have a modification time in the future (this machine's clock says "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}):\n"
                + "\n".join(f"  {p}: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))}" for p, t in ahead[:10])
                + "\nSnakemake would take this for clock skew, delete finished outputs and rerun the same jobs on "
                "every run. The clock of the machine that wrote them was ahead, or they were touched with a future "
                "date: fix that clock (NTP), or set their times to now (touch -c <file>; for a folder, its "
                ".snakemake_timestamp); nothing was run or deleted."
            )
        damaged, stale = survey([rd], downloads)
        for out, (rule, reasons) in {**stale, **damaged}.items():  # a damaged one too: its job is in the DAG
            mark_stale(out, rerun_flag(rd, rule) if rule in self.flagged else None, reasons)
        if stale:
            self.logger.warning(
                f"{len(stale)} results were made from inputs whose content changed since (entcal.records); their jobs "
                "and what follows run again:\n"
                + "\n".join(f"  {out} ({rule}): " + "; ".join(why) for out, (rule, why) in sorted(stale.items()))
            )
        self.damaged.update(damaged)
        if damaged:
            self.logger.warning(
                f"{len(damaged)} results are not what their jobs wrote; the run stops before any job unless you ask "
                "for each to be redone (--forcerun <file> or <rule>):\n"
                + "\n".join(f"  {out}: " + "; ".join(why) for out, (rule, why) in sorted(damaged.items()))
            )

    def check_hooks(self) -> None:
        """Once the DAG is built (the default target's input function): a workflow that uses this one as a module must
        hand on its onstart, onsuccess and onerror, since Snakemake runs only the using workflow's hooks
        (docs/deploy.md); without them no run would lock its results folder, check its inputs' records or record
        its provenance."""
        hooks = ("onstart", "onsuccess", "onerror")
        if missing := [h for h in hooks if h not in self.workflow.globals]:
            raise WorkflowError(
                f"{self.workflow.main_snakefile} uses this workflow as a module but defines no {', '.join(missing)}: "
                "without them no run locks its results folder, checks its inputs' records or records its "
                "provenance. Add these lines after the line that imports its rules (use rule * from <module>)\n"
                + "\n".join(f"{h}:\n    <module>.{h}()" for h in hooks)
                + "\n(docs/deploy.md)"
            )

    # -- hooks ------------------------------------------------------------------------------------------------
    def onstart(self) -> None:
        """One run at a time on a results folder; a SIGTERM noted; the job environment and the inputs checked."""
        try:
            lock_results_dir(self.rd, owner=self.workflow_dir)
        except ResultsLockedError as err:
            raise WorkflowError(str(err)) from None
        self.watch_sigterm()
        if why := job_venv_problem(getattr(self.workflow.remote_execution_settings, "precommand", None)):
            raise WorkflowError(why)  # the job environment of a site without conda, before any job is submitted
        self.check_intermediate_files()

    def onsuccess(self) -> None:
        write_marker(os.getcwd(), self.rd)  # this working directory's Snakemake records now cover the results

    def onerror(self) -> None:
        write_marker(os.getcwd(), self.rd)
        self.aggregate_finished()
        if self.terminated:
            self.logger.error(
                "Stopped by SIGTERM (scancel, a time limit or kill): no job failed. Every finished job's outputs are "
                "kept (Snakemake lets the jobs running here finish first; a job cut off elsewhere keeps its finished "
                "shards in {output}.shards/). Resume with the same snakemake command: only what is missing runs, "
                "from the last shard."
            )

    def watch_sigterm(self) -> None:
        """Note a SIGTERM, then hand it to Snakemake's own handler (which lets running jobs finish and starts no new
        one), so that onerror can say what happened: Snakemake itself only says that "at least one job did not
        complete"."""
        prev = signal.getsignal(signal.SIGTERM)

        def note(signum, frame):
            self.terminated.append(time.time())
            if callable(prev):
                prev(signum, frame)
            else:
                signal.signal(signal.SIGTERM, prev)
                os.kill(os.getpid(), signal.SIGTERM)

        try:
            signal.signal(signal.SIGTERM, note)
        except ValueError:  # not the main thread (Snakemake's GUI): Snakemake's message stands
            pass

    def check_intermediate_files(self) -> None:
        """Stop before any job runs (and before Snakemake deletes the outputs it would recompute) if an existing
        intermediate file that this run reads, not writes, is damaged or cut short (its sidecar), or if a result is
        not what its job wrote (its record, check_records) and the command did not ask for it again."""
        settings = self.workflow.dag_settings
        asked = {os.path.abspath(f) for f in settings.forcerun} | set(settings.forcerun)  # files and rules
        refused = {
            str(out): (rule, reasons)
            for out, (rule, reasons) in sorted(self.damaged.items())
            if not (settings.forceall or str(out) in asked or asked & {rule})
        }
        needrun = self.workflow.dag.needrun_jobs()
        rewritten = [f for job in needrun for f in job.output if os.path.abspath(f) not in refused]
        bad = check_existing(self.grid.intermediate_files(), skip=rewritten)
        said = "\n".join(bad)
        bad += [
            f"{out}: {'; '.join(reasons)}. To {redo(out)} (that job and what follows run again)"
            for out, (rule, reasons) in refused.items()
            if f"{out}:" not in said
        ]
        if bad:
            raise WorkflowError("damaged intermediate files; nothing was run or deleted:\n  " + "\n  ".join(bad))

    def aggregate_finished(self) -> None:
        """Where jobs failed (with --keep-going the rest ran), for each part (the paper's settings, the extras) whose
        tables could not be made, the tables of every setting whose generation and scores are there, and
        tables/missing.csv (missing_extra.csv) naming the others, the rule that failed and its log. The next run
        remakes the tables by the rules once the missing jobs succeed (their files are newer)."""
        if self.terminated:
            return
        cfg, grid = self.config, self.grid
        logs = {
            r: str(getattr(self.rules, r).log[0]).replace("{{", "{").replace("}}", "}")
            for r in ("generate", "score", "score_extra")
            if self.rules.has(r)
        }
        for part in PARTS:
            jobs = grid.aggregate_jobs(part)
            done, missing = split_finished(jobs, logs)
            if missing.empty or not done:
                continue
            out = {k: grid.path(part_kind(k, part)) for k in ("summary", "per_step", "per_prompt", "missing")}
            try:
                aggregate(
                    done,
                    per_step_out=out["per_step"],
                    summary_out=out["summary"],
                    max_len=cfg["analysis"]["max_len"],
                    per_prompt_out=out["per_prompt"],
                    missing_out=out["missing"],
                    missing=missing,
                    reference_start=cfg["analysis"]["reference_start"],
                    fidelity=cfg["fidelity"],
                    n_boot=cfg["analysis"]["n_boot"],
                    seed=cfg["seed"],
                    estimator=cfg["analysis"]["estimator"],
                )
            except Exception as err:  # a damaged file among the finished ones: its own message, nothing written over
                self.logger.error(f"tables of the finished jobs not written: {err}")
                continue
            # their records, as the rule's job would write them (entcal.records): made from the finished files only
            made = {p: digest(p)[0] for job in done for p in (job["generations"], job["scores"])}
            for path in out.values():
                write_record(path, "aggregate" if part == "paper" else "aggregate_extra", made)
            what = "the paper's" if part == "paper" else "the extra (beyond-paper)"
            self.logger.error(
                f"{len(missing)} of {len(jobs)} of {what} generation settings are missing (failed jobs, or jobs after "
                f"them): {out['summary']}, {os.path.basename(out['per_step'])} and "
                f"{os.path.basename(out['per_prompt'])} hold the other {len(done)}, and {out['missing']} lists the "
                "missing ones with the rule that failed and its log. Fix the cause and run the same command again: "
                "the missing jobs run and the tables are remade by their rules."
            )
