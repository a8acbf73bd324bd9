"""Oracles for the metric tests: pycocoevalcap's Java PTB tokenizer, plus the fixture that caches it.

``python tests/metrics/_metrics_oracle.py`` regenerates ``ptb_oracle.json`` (needs ``java`` and the
``pycocoevalcap`` wheel, whose jar is Stanford CoreNLP 3.4.1).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

FIXTURE = Path(__file__).with_name("ptb_oracle.json")
# pycocoevalcap's filter, restated here so that the oracle does not depend on lightning_gpv.
_PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}


def java_available() -> bool:
    if shutil.which("java") is None:
        return False
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


def _jar() -> str:
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    return str(Path(ptb.__file__).with_name(ptb.STANFORD_CORENLP_3_4_1_JAR))


def java_lines(text: str) -> list[str]:
    """Raw output lines of ``PTBTokenizer -preserveLines -lowerCase`` on ``text``."""
    with tempfile.NamedTemporaryFile("w", delete=False, encoding="utf-8", suffix=".txt") as handle:
        handle.write(text)
        name = handle.name
    try:
        cmd = [
            "java",
            "-cp",
            _jar(),
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
            name,
        ]
        out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode("utf-8")
    finally:
        os.remove(name)
    return out.split("\n")


def _filter(line: str) -> str:
    return " ".join(w for w in line.rstrip().split(" ") if w not in _PUNCTUATIONS)


def java_isolated(captions: Sequence[str]) -> list[str]:
    """Final pycocoevalcap tokens of each caption as if followed by a newline and a lower-case line."""
    text = "".join(c.replace("\n", " ") + "\nx\n" for c in captions)
    lines = java_lines(text)
    return [_filter(lines[2 * i]) for i in range(len(captions))]


def pycocoevalcap_tokenize(captions: Sequence[str]) -> list[str]:
    """One real ``PTBTokenizer.tokenize`` call on the captions, in order."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [out[i][0] for i in range(len(captions))]


# Caption material ------------------------------------------------------------------------------------
HANDPICKED = [
    "A man riding a wave on top of a surfboard.",
    "A man's dog (brown) isn't \"happy\" -- he can't run.",
    "Two dogs [on] a {couch}; ...",
    "I cannot do it, gonna wanna.",
    "gotta lemme gimme dunno",
    "Y'all ain't seen nothin' 'til 'tis 'twas 'Twas",
    "Let's go 90's James' house the '90s",
    "Mr. Smith and Dr. Who at St. Louis p.m. e.g. U.S.A. etc. No. 5 no. fig. 3 fig.",
    "man. a dog. A man., and a man.; and",
    "$5.50 100% #1 #tag x*y a+b a=b 3:30 1,000,000 3.14 1/2 cat/dog t-shirt 12-year-old o'clock",
    ":) :-) ;) :D :P =) :( !!! ?? ?! ok.. .... ^_^ <3",
    "café naïve colour São Paulo Zürich 北京 Ελλάδα Москва",
    "“quoted” ‘single’ em—dash en–dash «guillemets» „low‟ ‹angle›",
    "http://www.example.com/foo bar@baz.com www.google.com foo.org/x mailto:a@b.com",
    "A DOG IS RUNNING. A Dog Is Running",
    "the cat's toy's the dogs' toys",
    "don't won't shan't can't I'm you're we've they'd she'll couldn't've",
    "it’s don’t I’m dogs’ ’90s ‘tis ma’am o’clock",
    "a½ ¼ ⅔ ⅛ x² H₂O € £ ¢ ¥ © ® ™ ° × • · §",
    "5 1/2 (555) 555-5555 12/25/2020 1.5.2020 v1.2 10:30pm 3rd",
    "AT&T R&D at&t &amp; c++ c# f#",
    "a b-c -- --- ---- ----- a--b a---b - x-",
    "soft\u00adhyphen \u00ad tab\there nbsp\u00a0here ideographic\u3000space",
    "emoji 😀 in 🐶 the 🍕 middle",
    "",
    "   ",
    ".",
    "!",
    "'",
    '"',
    "the letter X.",
    "plan B.",
    "U.S.",
    "etc.",
    "she'll",
    "man's",
]


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(" "))


_WORDS = _split(
    "a man woman dog cat is are riding sitting on the of with in and two three people table street car bus "
    "train plate food pizza it they there this that"
)
_SPECIAL = _split(
    "Mr. Dr. St. U.S. U.S.A. e.g. i.e. etc. vs. No. no. Inc. Jan. fig. ca. p.m. a.m. I A X. B. The He don't "
    "can't won't isn't it's man's dogs' I'm you're we've they'd she'll y'all o'clock rock'n'roll ma'am 'em "
    "'90s 'tis 'twas cannot gonna Cannot t-shirt x-ray 12-year-old well-known co-op a--b non-U.S. 1 2 10 3.5 "
    "1,000 .5 -5 +3 5% $5 $5.50 US$5 #1 #tag @user 1/2 3:30 1st 3D mp3 4x4 AT&T R&D & x*y a+b a=b a/b and/or "
    "w/o c++ c# www.foo.com foo.com a@b.com :) :-) ;) :D <3 ^_^ café naïve über 北京 😀 ° × ½ € £ ¢ © ™ • · "
    "¿ ¡ – — … “ ” ‘ ’ « » „ ‹ › ´ ` `` ''"
)
_PUNCT = _split(
    ". , ; : ! ? !! !!! ?! ?.. ... .... .. - -- --- ----- ( ) [ ] { } < > \" ' * / \\ | ~ ^ _ = + % # @ $"
)


def random_captions(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)

    def piece() -> str:
        r = rng.random()
        if r < 0.45:
            w = rng.choice(_WORDS)
            return w.capitalize() if r < 0.07 else w
        return rng.choice(_SPECIAL) if r < 0.75 else rng.choice(_PUNCT)

    out = []
    for _ in range(n):
        text = ""
        for i in range(rng.randint(1, 12)):
            j = rng.random()
            text += ("" if i == 0 else (" " if j < 0.7 else ("" if j < 0.95 else "  "))) + piece()
        out.append(text)
    return out


def main() -> None:
    captions = HANDPICKED + random_captions(0, 1200)
    # One line per character class the jar distinguishes (a sample of BMP code points).
    rng = random.Random(1)
    for code in sorted(rng.sample(range(0x80, 0xFFFF), 400)):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        if ch in "\x85\u2028\u2029\x0b\x0c\r":
            continue
        captions.append(f"a{ch}b x {ch} y {ch}{ch} 1{ch}2 {ch}a")
    batch = HANDPICKED[:24] + random_captions(2, 60)
    data = {
        "jar": "stanford-corenlp-3.4.1 (pycocoevalcap 1.2), PTBTokenizer -preserveLines -lowerCase",
        "isolated": {"captions": captions, "tokens": java_isolated(captions)},
        "batch": {"captions": batch, "tokens": pycocoevalcap_tokenize(batch)},
    }
    FIXTURE.write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")
    print(f"wrote {FIXTURE} ({len(captions)} isolated captions, {len(batch)} batch captions)")


if __name__ == "__main__":
    main()
