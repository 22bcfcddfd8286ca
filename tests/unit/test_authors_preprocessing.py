"""``text_rules: authors`` against the authors' released preprocessing (``stevenxcao/entropy-calibration``,
``load_datasets.py`` and ``modeling.py``), one test per hub dataset.

Each test writes a few records in the hub file's own format, then checks (1) the document and instruction
strings against the exact strings their code produces for those records (derived by reading their code:
``detokenize(s) = TreebankWordDetokenizer().detokenize(s.split())``, the ``[ WP ]`` check after it,
``"```{}```".format(longest_ascii_solution.strip())``, ``"{}\\n{}".format(CODELLAMA_PROMPT, description)``)
and (2) the prompt and reference token ids against their construction, re-expressed here in a few lines:

- base models: ``encode_prompt("Q: " + instruction + "\\nA: ")`` (specials added, a trailing EOS removed)
  followed by ``encode_response(story)[:P]``; reference ``encode_response(story)[P:][:max_len]``;
- WikiText: ``encode_prompt(article)[:P]`` (the BOS counts among the P) and the rest as the reference;
- a record qualifies when ``len(prompt) + max_len < context`` and its reference has at least ``min_len`` tokens.

``text_rules: paper`` is checked on the same records, where it differs.
"""

import copy

import pandas as pd
import pytest

P, MAX_LEN, MIN_LEN = 8, 12, 12
WP_PROMPT = "Write a story based on the following prompt: {}"
CODELLAMA_PROMPT = (
    "Write code to solve the following coding problem that obeys the constraints and passes the example "
    "test cases. The output code needs to read from and write to standard IO. Please wrap your code "
    "answer using ```:"
)


@pytest.fixture(scope="module")
def bos_tokenizer(tiny_tokenizer):
    """The tiny BPE with a BOS put in front of every encoding, as Llama's and Pythia-free tokenizers do."""
    from tokenizers import processors

    tok = copy.deepcopy(tiny_tokenizer)
    bos = tok.convert_tokens_to_ids(tok.bos_token)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)]
    )
    assert tok("a b")["input_ids"][0] == bos
    return tok


def encode_prompt(tok, text: str) -> list[int]:
    """Their ``HFModel.encode_prompt`` for a string: specials added, a trailing EOS removed."""
    ids = tok(text, add_special_tokens=True)["input_ids"]
    return ids[:-1] if ids[-1] == tok.eos_token_id else ids


def encode_response(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def qualifies(prompt: list[int], response: list[int], context: int = 4096) -> bool:
    return len(prompt) + MAX_LEN < context and len(response) >= MIN_LEN


def prepared(tmp_path, builder: str, text_rules: str, n: int, tok) -> tuple[pd.DataFrame, list]:
    """Our path: prepare_dataset (the paper's selection) then select_examples, as select_prompts runs them."""
    from entcal.data import prepare_dataset
    from entcal.prompts import select_examples

    spec = {
        "source": "hf",
        "builder": builder,
        "selection": "first",
        "text_rules": text_rules,
        "min_chars": 200 if builder == "wikitext103" else 0,
    }
    out = {k: str(tmp_path / f"{k}-{text_rules}.parquet") for k in ("docs", "examples", "calibration")}
    prepare_dataset(
        spec, out["docs"], out["examples"], seed=0, raw_dir=str(tmp_path), calibration_out=out["calibration"]
    )
    chosen = select_examples(tok, out["examples"], P, MAX_LEN, MIN_LEN, n, text_rules=text_rules, max_context=4096)
    return pd.read_parquet(out["docs"]), chosen


def test_wikitext103_articles_and_prompts_as_the_authors_encode_them(tmp_path, bos_tokenizer):
    from entcal.data import read_corpus

    tok = bos_tokenizer
    # iohadrubin/wikitext-103-raw-v1: one article per row of the train split; headings inline, " @-@ " kept
    articles = [
        " = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor . He had a guest @-@ "
        "starring role on the television series The Bill in 2000 . \n = = Career = = \n = = = 2000 – 2005 = = = \n "
        "In 2000 Boulter had a guest @-@ starring role on the television series The Bill . \n",
        " = Short = \n Too short to keep . \n",  # under their 200-character filter
        " = Du Fu = \n Du Fu ( Wade – Giles : Tu Fu ; 712 – 770 ) was a prominent Chinese poet of the Tang dynasty . "
        "Along with Li Bai ( Li Po ) , he is frequently called the greatest of the Chinese poets . \n = = Life = = \n",
    ]
    (tmp_path / "data").mkdir()
    pd.DataFrame({"text": articles}).to_parquet(tmp_path / "data" / "train-00000-of-00002.parquet")
    pd.DataFrame({"text": [" = Test = \n" * 40]}).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    # (1) their load_wikitext: the train rows of >= 200 characters, unchanged, in file order
    docs = read_corpus({"source": "hf", "builder": "wikitext103", "text_rules": "authors"}, tmp_path)
    kept = [t for _, t in docs if len(t) >= 200]
    assert kept == [articles[0], articles[2]]
    # (2) prompt = the first P tokens of the whole encoded article, BOS included; reference = the rest
    _, ours = prepared(tmp_path, "wikitext103", "authors", 2, tok)
    for (eid, prompt, ref), article in zip(ours, kept):
        ids = encode_prompt(tok, article)
        assert prompt == ids[:P] and ref == ids[P:][:MAX_LEN]
    # paper rules: the BOS comes before P text tokens, so every reference starts one token later
    _, paper = prepared(tmp_path, "wikitext103", "paper", 2, tok)
    for (_, prompt, ref), article in zip(paper, kept):
        ids = encode_prompt(tok, article)
        assert prompt == ids[: P + 1] and ref == ids[P + 1 :][:MAX_LEN]


def test_writingprompts_keeps_the_markers_and_the_tag_as_the_authors_detokenise(tmp_path, bos_tokenizer):
    from entcal.data import read_corpus

    tok = bos_tokenizer
    # euclaise/writingprompts: the original tokenised text, " <newline> " markers, "[ WP ]"-style tags
    records = pd.DataFrame(
        {
            "prompt": [
                "[ WP ] You wake up with a number on your wrist . It 's counting down .",
                "[ WP ] [ TT ] Aliens arrive , but they only speak in questions .",
                "[ W P ] Your cat can talk .",
            ],
            "story": [
                "The first thing I noticed was the number . <newline> <newline> `` What is that ? '' she asked , "
                "pointing . <newline> I did n't answer . " * 3,
                "`` Why are you here ? '' <newline> <newline> We did n't know . They asked again , and again . " * 3,
                "Mittens cleared her throat . <newline> `` We need to talk about the food . '' " * 3,
            ],
        }
    )
    (tmp_path / "data").mkdir()
    records.to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    # (1) the strings their item_to_messages_writingprompts builds: the detokeniser turns "[ WP ]" into "[WP]"
    # before the tag check, so no tag is stripped; the markers stay in the story
    want_instr = [
        WP_PROMPT.format("[WP] You wake up with a number on your wrist. It's counting down."),
        WP_PROMPT.format("[WP] [TT] Aliens arrive, but they only speak in questions."),
        WP_PROMPT.format("[W P] Your cat can talk."),
    ]
    one = (
        "The first thing I noticed was the number. <newline> <newline> "
        '"What is that?" she asked, pointing. <newline> I didn\'t answer.'
    )
    want_story = " ".join([one] * 3)
    docs = read_corpus({"source": "hf", "builder": "writingprompts", "text_rules": "authors"}, tmp_path)
    assert [d[2] for d in docs] == want_instr
    assert docs[0][1] == want_story
    assert docs[1][1].startswith(
        '"Why are you here?" <newline> <newline> We didn\'t know. They asked again, and again.'
    )
    assert docs[2][1].endswith('Mittens cleared her throat. <newline> "We need to talk about the food."')
    # (2) base model's prompt: "Q: <instruction>\nA: " with specials, then the story's first P tokens
    _, ours = prepared(tmp_path, "writingprompts", "authors", 3, tok)
    for (_, prompt, ref), (_, story, instr) in zip(ours, docs):
        head, body = encode_prompt(tok, f"Q: {instr}\nA: "), encode_response(tok, story)
        assert qualifies(head + body[:P], body[P:])
        assert prompt == head + body[:P] and ref == body[P:][:MAX_LEN]
    # paper rules: the tag removed, the markers made newlines
    paper = read_corpus({"source": "hf", "builder": "writingprompts", "text_rules": "paper"}, tmp_path)
    assert paper[0][2] == WP_PROMPT.format("You wake up with a number on your wrist. It's counting down.")
    assert paper[0][1].startswith('The first thing I noticed was the number.\n\n"What is that?" she asked, pointing.\n')
    assert "<newline>" not in "".join(d[1] for d in paper)


def test_codecontests_longest_ascii_solution_fenced_as_the_authors_do(tmp_path, bos_tokenizer):
    from entcal.data import read_corpus

    tok = bos_tokenizer
    desc_a = (
        "Petya has n coins. Find the least number of them that sum to more than half.\n\nInput\n\nThe first line "
        "contains n (1 ≤ n ≤ 100).\n\nOutput\n\nPrint one integer.\n\nExample\n\nInput\n\n2\n3 3\n\nOutput\n\n2\n"
    )
    cpp = (
        "#include <bits/stdc++.h>\nusing namespace std;\nint main() {\n  int n;\n  cin >> n;\n  cout << n << endl;\n}\n"
    )
    py = "n = int(input())\nprint(n)\n"
    unicode_long = "# résumé\n" + "print('é')\n" * 20  # longest, but not ASCII: skipped
    rows = {
        "train": [
            ("1_A. Coins", desc_a, {"language": [2, 3, 1], "solution": ["\n" + py + "\n", cpp + "\n\n", unicode_long]}),
            ("2_B. Picture", "Look at the picture.\n<image>\n\nInput\n\nn\n", {"language": [3], "solution": [py * 9]}),
            ("3_C. Empty", "No ASCII solution.\n", {"language": [3], "solution": [unicode_long]}),
        ],
        "valid": [
            ("4_D. Tie", "Two equally long solutions.\n", {"language": [3, 2], "solution": [py * 4, py[::-1] * 4]})
        ],
        "test": [("5_E. Fig", "As shown in [Image] the grid.\n", {"language": [3], "solution": [py * 9]})],
    }
    (tmp_path / "data").mkdir()
    for split, rs in rows.items():
        pd.DataFrame(rs, columns=["name", "description", "solutions"]).to_parquet(
            tmp_path / "data" / f"{split}-00000-of-00001.parquet"
        )
    # (1) their item_to_messages_codecontests: train + valid + test; problems with an image tag or no ASCII
    # solution dropped; the first longest ASCII solution, stripped, between fences with no newline
    docs = read_corpus({"source": "hf", "builder": "codecontests", "text_rules": "authors"}, tmp_path)
    assert [d[0] for d in docs] == ["train/1_A. Coins", "valid/4_D. Tie"]
    assert docs[0][1] == "```" + cpp.strip() + "```"
    assert docs[0][2] == CODELLAMA_PROMPT + "\n" + desc_a  # the statement as it is, trailing newline kept
    assert docs[1][1] == "```" + (py * 4).strip() + "```"  # numpy's argmax: the first of equal lengths
    # (2) the base model's prompt and reference
    _, ours = prepared(tmp_path, "codecontests", "authors", 2, tok)
    for (_, prompt, ref), (_, sol, instr) in zip(ours, docs):
        head, body = encode_prompt(tok, f"Q: {instr}\nA: "), encode_response(tok, sol)
        assert prompt == head + body[:P] and ref == body[P:][:MAX_LEN]
    # paper rules: the same solution in a fenced block with newlines
    paper = read_corpus({"source": "hf", "builder": "codecontests", "text_rules": "paper"}, tmp_path)
    assert paper[0][1] == "```\n" + cpp.strip() + "\n```"
