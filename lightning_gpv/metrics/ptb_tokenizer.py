"""Pure-Python reproduction of the caption tokenization of coco-caption / pycocoevalcap.

pycocoevalcap runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` on all captions
joined by newlines, then drops the tokens of :data:`PUNCTUATIONS`. This module re-implements that lexer
(a JFlex scanner: at each position the rule with the longest match wins, its trailing context included;
ties go to the earlier rule) from the behaviour of the 3.4.1 jar, checked against it token by token
(``tests/metrics/test_metrics_ptb.py``; during development also on ~40,000 fuzzed lines and on every BMP
character, without a difference). Reproduced quirks include:

* bracket tokens are lower-cased to ``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`` and so survive the upper-case
  filter; ``!!!``, ``?!``, ``man.`` before a comma, ``no.``/``fig.`` before a number stay tokens;
* PTB clitics and assimilations (``ca n't``, ``ai n't``, ``can not``, ``gon na``, ``'t is``, ``y' all``);
* quotes, dashes and ellipses normalized then filtered (``em—dash`` -> ``em dash``), ``$ 5``, ``100 %``,
  ``# 1`` but ``#tag``, smileys (``:-rrb-``), phone numbers and ``5 1/2`` joined with U+00A0.

Context that crosses caption boundaries cannot be reproduced caption by caption: the Java lexer sees the
next caption (a trailing single-letter abbreviation such as ``plan B.`` keeps its period unless the next
caption starts with ``A``, ``The``, ``He``, ...), and the last caption of a Java call ends at end-of-file
(a final ``'ll``/``'s``/``'d`` then loses its apostrophe). :func:`ptb_tokenize` tokenizes a caption as if it
were followed by a newline and a lower-case line; :func:`ptb_tokenize_lines` reproduces one whole Java
call (same order, cross-line context and end of file included).

Most captions (ASCII words, clitics, numbers, brackets, plain punctuation) take a fast path: one full match
checks that the rules cannot lex them in any other way than splitting off those pieces (see the comments
at ``_FAST_CAPTION``), and their tokens are then made with a few string operations; the rest goes through
the rules. :func:`ptb_tokenize_batch` does this for many captions at once, on their joined text. Besides
``tests/metrics/test_metrics_ptb_fast.py``, the fast path was compared during development with the rules
on ~1.2 million generated captions it accepts and with the jar on ~400,000, without a difference.

Character classes (letters, digits, symbols kept as tokens) come from tables measured on the jar for the
whole BMP (:mod:`._ptb_tables`); characters outside the BMP are dropped, as the jar drops surrogates. SGML
markup and HTML entities are only approximated; lower-casing uses Python's ``str.lower``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache

from lightning_gpv.metrics import _ptb_tables

__all__ = ["PUNCTUATIONS", "ptb_tokenize", "ptb_tokenize_batch", "ptb_tokenize_lines", "ptb_raw_tokens"]

#: Tokens pycocoevalcap removes after tokenization (compared case-sensitively, after lower-casing).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


def _class_body(ranges: str) -> str:
    """Regex character-class body for a :mod:`_ptb_tables` range string."""
    parts = []
    for item in ranges.split():
        lo, _, hi = item.partition("-")
        parts.append(f"\\u{lo}" + (f"-\\u{hi}" if hi else ""))
    return "".join(parts)


_PLAIN = "A-Za-z" + _class_body(_ptb_tables.PLAIN_LETTERS)  # JFlex [:letter:]
_LET = _PLAIN + "\u00ad" + _class_body(_ptb_tables.EXTRA_LETTERS)  # letters of the WORD rule
_DIG = "0-9" + _class_body(_ptb_tables.DIGITS)
L = f"[{_LET}]"
PL = f"[{_PLAIN}]"
D = f"[{_DIG}]"
LD = f"[{_LET}{_DIG}]"
PLD = f"[{_PLAIN}{_DIG}]"
SP = "[ \\t\\u00a0\\u2000-\\u200a\\u3000]"
NL = "(?:\\r\\n|[\\r\\n\\u2028\\u2029\\u000b\\u000c\\u0085])"
SPNL = f"(?:{SP}|{NL})"
APOS = "(?:['\\u0092\\u2019]|&apos;)"
APOSX = f"(?:{APOS}|[`\\u0091\\u2018\\u201b])"
HYPHEN = "[-_\\u058a\\u2010\\u2011]"
WORD = f"{L}{LD}*(?:[.!?]{L}{LD}*)*"
ACRO = (
    "(?:[A-Za-z](?:\\.[A-Za-z])*|(?i:canada|sino|korean|eu|japan|non)-(?i:u)\\.(?i:s)"
    "|(?i:u\\.s\\.-(?:u\\.k|u\\.s\\.s\\.r)))"
)
ACRO2 = "(?:[A-Za-z](?:\\.[A-Za-z])+)"
# Abbreviation lists measured on the 3.4.1 jar. A leading [X] class is case-sensitive (JFlex's caseless mode
# does not expand character classes); the rest matches any case.
_MONTHS_DAYS = "jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|mon|tues?|wed|thu(?:rs)?|fri"
_STATES_CI = (
    "ala|ariz|calif|colo|conn|ct|dak|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev|okla|penn|tenn|va|vt"
    "|wisc?|wyo"
)
_STATES_CS = ["Az", "Ark", "Del", "Ill", "La", "Mass", "Miss", "Ore", "Pa", "Tex", "Wash"]
_COMP = "inc|cos?|corp|pp?t[ye]s?|ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys|est|ext|sq|tel|jr|sr|bros|esq"
_OTHER1 = "ed\\.d|ph\\.d|etc|al|seq|bldg|blvd|rd"
_ABBREV1 = (
    f"(?:(?i:{_MONTHS_DAYS}|{_STATES_CI}|{_COMP}|{_OTHER1})"
    + "".join(f"|{w[0]}(?i:{w[1:]})" for w in _STATES_CS)
    + ")\\."
)
_TITLES = (
    "mrs?|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|mt|capt|ste?|ave"
    "|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|adj|adv|asst|assoc|ens|insp|mlle|mme|msgr|sfc|ft|dept"
    "|vs|alex|wm|jos|cie|a\\.k\\.a|cf|treas|ph|invt|elec|natl|m[ft]g"
)
ABBREV4 = f"(?:(?i:{_TITLES})|M(?i:iss)|{ACRO})"
_WORDS3 = "ca|figs?|prop|nos?|art|bldg|pp|op"
ABBREV3 = f"(?i:{_WORDS3})\\."
_SENT_STARTERS = " ".join(
    [
        "About According Additionally After An A As At But Earlier He Her Here However If In It Last Many",
        "More Mr. Ms. Now Once One Other Our She Since So Some Such That The Their Then There These They",
        "This We When While What Yet You",
    ]
).split(" ")
_STARTERS = "|".join(re.escape(w[0]) + "(?i:" + re.escape(w[1:]) + ")" for w in _SENT_STARTERS)
_NAME = "[A-Za-z][A-Za-z0-9_:.\\-]*"
_ATTR = f"{_NAME}(?:[ ]*=[ ]*(?:'[^'\\r\\n]*'|\"[^\"\\r\\n]*\"|{_NAME}))?"
SGML = f"<(?:[!?][A-Za-z\\-][^>\\r\\n]*|{_NAME}(?:[ ]+{_ATTR})*[ ]*/?|/{_NAME})[ ]*>"
QUOTE_CHARS = (
    "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]"
)
_URL_END = '[^ \\t\\n\\f\\r"<>|.!?(){},-]'
_URL_PATH = f'(?:/[^ \\t\\n\\f\\r"<>|()]+{_URL_END})?'
MISC = "[+%&~^|\\\\" + _class_body(_ptb_tables.SYMBOLS) + "]"
_HTHING = f"[A-Za-z0-9][A-Za-z0-9.,\\u00ad]*(?:-(?:{ACRO2}\\.|[A-Za-z0-9\\u00ad]+))+"

# Token text transformations -------------------------------------------------------------------------
_LATEX_SUBS = (
    (re.compile("[\\u0091\\u2018\\u201b\\u2039]"), "`"),
    (re.compile("[\\u0092\\u2019\\u203a]"), "'"),
    (re.compile("[\\u0093\\u201c\\u00ab]"), "``"),
    (re.compile("[\\u0094\\u201d\\u00bb]"), "''"),
)


def _quotes(text: str, left: bool) -> str:
    """``latexQuotes``: ASCII quotes become `` ` ``/``'`` (``\\`\\```/``''``), curly ones likewise."""
    text = text.replace("&apos;", "'").replace("&quot;", '"')
    text = text.replace("'", "`" if left else "'").replace('"', "``" if left else "''")
    for pattern, repl in _LATEX_SUBS:
        text = pattern.sub(repl, text)
    return text


_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}


def _keep(text: str) -> str:
    return text


def _nbsp(text: str) -> str:
    return text.replace(" ", "\u00a0")


def _phone(text: str) -> str:
    return _nbsp(text).replace("(", "-LRB-").replace(")", "-RRB-")


def _smiley(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


def _hyphens(text: str) -> str:
    return "--" if 3 <= len(text) <= 4 else text


def _soft(text: str) -> str:
    return text.replace("\u00ad", "") or "-"


_SM = "[\\^x=~<>']"
_ASIAN_SMILEY = (
    f"[\\^x=~<>]\\.[\\^x=~<>]|[\\-\\^x=~<>']_[\\-\\^x=~<>']|\\({_SM}[_.]?{_SM}\\)"
    "|\\([\\^x=~<>']-[\\^x=~<>'`]\\)|\\u00af\\\\_\\(\\u30c4\\)_/\\u00af"
)

# Rules ----------------------------------------------------------------------------------------------
_DUP = "dup"  # ABBREV1 before a sentence end: emit "etc." and re-lex its period
_ACRONYM = "acronym"  # processAcronym
_Action = Callable[[str], str]


class _Rule:
    """One lexer rule: ``first`` (class of the possible first characters, used to dispatch), the main
    pattern, an optional trailing context (part of the match length, as in JFlex, but not of the token),
    the action mapping the token text to the emitted token, and a pushback count. ``requires``: characters
    of which the main pattern (which never spans whitespace then) needs at least one, used to skip the rule
    quickly."""

    __slots__ = ("first", "regex", "action", "pushback", "requires")

    def __init__(
        self,
        first: str,
        main: str,
        context: str | None,
        action: _Action | str,
        pushback: int,
        requires: str | None = None,
    ) -> None:
        self.first = re.compile(first)
        self.regex = re.compile(f"(?P<m>{main})" + ("" if context is None else f"(?:{context})"))
        self.action = action
        self.pushback = pushback
        self.requires = frozenset(requires) if requires else None


def _build_rules() -> list[_Rule]:
    rules: list[_Rule] = []

    def add(
        first: str,
        main: str,
        context: str | None = None,
        action: _Action | str = _keep,
        pushback: int = 0,
        requires: str | None = None,
    ) -> None:
        rules.append(_Rule(first, main, context, action, pushback, requires))

    apos_chars = "'\u0092\u2019&`\u0091\u2018\u201b"

    left: _Action = lambda t: _quotes(t, True)  # noqa: E731
    right: _Action = lambda t: _quotes(t, False)  # noqa: E731
    f_let, f_apos = f"[{_LET}]", "['\u0092\u2019&]"
    add("[cCfF]", "(?i:c\\+\\+|[cf]#)")
    add("[cC]", "(?i:cannot)", pushback=3)
    add("'", "'(?i:twas)", pushback=3)
    add("[gGlLwW]", "(?i:gonna|gotta|lemme|gimme|wanna)", pushback=2)
    add("'", "'(?i:tis)", pushback=2)
    add("<", SGML, action=_nbsp)
    add(
        "[&\u0096\u0097\u2013\u2014\u2015]",
        "&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]",
        None,
        lambda t: "--",
    )
    add("&", "(?i:&amp;)", None, lambda t: "&")
    add("&", "&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);")
    add(f_let, WORD, f"{APOS}(?i:[msd]|re|ve|ll)", _soft, requires=apos_chars)
    add(
        "[A-Za-z\u00ad]",
        "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*",
        f"(?i:n){APOSX}(?i:t)",
        _soft,
        requires=apos_chars,
    )
    add(f_let, WORD, None, _soft)
    # Words with an apostrophe inside or around them (APOWORD).
    for pattern in (
        f"{APOS}(?i:n){APOS}?",
        f"[lLdDjJ]{APOS}",
        f"(?i:dunkin|somethin|ol){APOS}",
        f"{APOS}(?i:em)",
        f"[A-HJ-XZn]{APOSX}{PL}{{2}}{PL}*",
        f"{APOS}[2-9]0(?i:s)",
        f"{APOS}(?i:till?)",
        f"{PL}+[aeiouyAEIOUY]{APOSX}[aeiouA-Z]{PL}*",
        f"{APOS}(?i:cause)",
        "(?i:cont'd\\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
        f"(?i:o){APOSX}(?i:o)",
    ):
        add(f"['\u0092\u2019&{_PLAIN}]", pattern, requires=apos_chars)
    add("[yY]", f"(?i:y){APOS}", PL)
    add("[hH]", f'https?://[^ \\t\\n\\f\\r"<>|()]+{_URL_END}', requires=":")
    add("w", f'www\\.(?:[^ \\t\\n\\f\\r"<>|.!?(){{}},]+\\.)+[a-zA-Z]{{2,4}}{_URL_PATH}', requires=".")
    # The ",-_" range of the original class also excludes digits and upper-case letters.
    url_char = "[^ \\t\\n\\f\\r\"`'<>|.!?(){},-_$]"
    add(url_char, f"(?:{url_char}+\\.)+(?i:com|net|org|edu){_URL_PATH}", requires=".")
    add(
        "[&<a-zA-Z0-9]",
        '(?:&lt;|<)?[a-zA-Z0-9][^ \\t\\n\\f\\r"<>|(){}\u00a0]*@(?:[^ \\t\\n\\f\\r"<>|(){}.\u00a0]+\\.)*'
        '[^ \\t\\n\\f\\r"<>|(){}.\u00a0]+(?:&gt;|>)?',
        requires="@",
    )
    add("@", "@[a-zA-Z_][a-zA-Z_0-9]*")
    add("#", f"#{L}+")
    add(f_apos, f"{APOS}(?i:[msd]|re|ve|ll)", "[^A-Za-z]", right)
    add("[nN]", f"(?i:n){APOSX}(?i:t)", "[^A-Za-z]", right)
    add(D, f"{D}{{1,2}}[\\-/]{D}{{1,2}}[\\-/]{D}{{2,4}}")
    add(f"[-+{_DIG}]", f"[\\-+]?{D}+", None, _soft)
    add(f"[-+.:,\u00ad\u066b\u066c{_DIG}]", f"[\\-+]?{D}*(?:[.:,\u00ad\u066b\u066c]{D}+)+", None, _soft)
    supsub = "[\u2070\u00b9\u00b2\u00b3\u2074-\u2079\u2080-\u2089\u207a\u207b\u208a\u208b]"
    add(supsub, "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)")
    add(D, f"(?:{D}{{1,4}}[- \u00a0])?{D}{{1,4}}(?:\\\\?/|\u2044){D}{{1,4}}", None, _nbsp)
    add(
        "[\u00bc\u00bd\u00be\u2153-\u215e]",
        "[\u00bc\u00bd\u00be\u2153-\u215e]",
        None,
        lambda t: _FRACTIONS.get(t, t),
    )
    add(
        "[-cCpPaAsS]",
        "-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\\.d\\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls)"
        f"|(?i:cap){APOS}(?i:n)|(?i:c){APOS}(?i:est)",
    )
    add(
        "[A-Za-z0-9]",
        "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}",
        requires="/",
    )
    add("[A-Z$#]", "[A-Z]*\\$|#", requires="$#")
    currency = "[\u00a2\u00a3\u00a4\u0080\u20a0\u20ac]"
    add(currency, currency, None, lambda t: _CURRENCY[t])
    add("[A-Za-z]", f"{ACRO}\\.", f"{SPNL}+(?:{_STARTERS}){SPNL}", _ACRONYM, requires=".")
    add("[A-Za-z]", ABBREV3, f"{SPNL}?{D}", requires=".")
    add("[pPcC]", "(?i:pt[ey]|co)\\.", f"{SP}(?i:ltd|lim)", requires=".")
    add("[A-Za-z]", _ABBREV1, f"{SPNL}(?:{SPNL}|[A-Z]|{SGML})", _DUP, requires=".")
    add("[A-Za-z]", _ABBREV1, "[\\s\\S][\\s\\S]", requires=".")
    add("[A-Za-z]", _ABBREV1, None, _DUP, requires=".")
    add("[A-Za-z]", f"{ABBREV4}\\.", requires=".")
    add("[A-Za-z]", ABBREV4, SP)
    add("[A-Za-z]", ACRO, SPNL)
    add(f_apos, f"{APOS}[0-9][0-9]", SPNL)
    add(f_let, f"{WORD}\\.", "[,;:\u3001]", _soft, requires=".")
    for pattern in (
        "\\([0-9]{2,3}\\)[ \u00a0]?[0-9]{3,4}[\\- \u00a0]?[0-9]{3,5}",
        "(?:\\+\\+?)?(?:[0-9]{2,4}[\\- \u00a0])?[0-9]{2,4}[\\- \u00a0][0-9]{3,4}[\\- \u00a0]?[0-9]{3,5}",
        "(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}",
    ):
        add("[(+0-9]", pattern, None, _phone)
    add('["&]', '"|&quot;', "[A-Za-z0-9$]", left)
    add('["&]', '"|&quot;', None, right)
    add("[<>:;=]", "[<>]?[:;=][\\-o*']?[()DPdpO\\\\{@|\\[\\]]", "[^A-Za-z0-9]", _smiley)
    add("[-\\^x=~<>'(\u00af]", _ASIAN_SMILEY, None, _smiley)
    add("[{}()\\[\\]]", "[{}()\\[\\]]", None, lambda t: _BRACKETS[t])
    add("-", "-+", None, _hyphens)
    add("[.\u0085\u2026]", "\\.{3,5}|[\u0085\u2026]", None, lambda t: "...")
    add("\\.", "(?:\\.[ \u00a0]){2,4}\\.", None, lambda t: "...")
    add("[@#_]", "@+|#+|_+")
    add("[*\\\\]", "\\*+|(?:\\\\\\*){1,3}")
    add("[,;:\u3001]", "[,;:\u3001]")
    add("[?!]", "[?!]+")
    periods = "[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]"
    add(periods, periods)
    add("=", "=")
    add("/", "/")
    add("[<>]", "<<|>>|[<>]")
    add("[A-Za-z0-9]", _HTHING, "[,;:\u3001]", _soft, requires="-")
    add("[A-Za-z0-9]", _HTHING, None, _soft, requires="-")
    thing = f"(?:[dDoOlL]{APOSX}{PLD})?{PLD}+(?:{HYPHEN}(?:[dDoOlL]{APOSX}{PLD})?{PLD}+)*"
    add(f"[{_PLAIN}{_DIG}]", f"{thing}\\.", "[,;:\u3001]", requires=".")
    add(f"[{_PLAIN}{_DIG}]", thing)
    thinga = "[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+"
    add("[A-Z]", f"{thinga}\\.", "[,;:\u3001]", lambda t: t.replace("&amp;", "&"), requires="&+")
    add("[A-Z]", thinga, None, lambda t: t.replace("&amp;", "&"), requires="&+")
    add("'", "'", "[A-Za-z][^ \\t\\n\\r\u00a0]", left)
    add(f_apos, f"{APOS}(?i:[msd]|re|ve|ll)", None, right)
    add(f_apos, APOS, None, right)
    add("'", "''", None, right)
    add(QUOTE_CHARS, f"{QUOTE_CHARS}{{1,2}}", None, right)
    add(MISC, MISC)
    return rules


_RULES: list[_Rule] = []
_DISPATCH: dict[str, tuple[_Rule, ...]] = {}


def _candidates(char: str) -> tuple[_Rule, ...]:
    """Rules that can match at a position starting with ``char`` (built lazily, then cached)."""
    found = _DISPATCH.get(char)
    if found is None:
        if not _RULES:
            _RULES.extend(_build_rules())
        found = tuple(rule for rule in _RULES if rule.first.match(char))
        _DISPATCH[char] = found
    return found


_SKIP = re.compile("(?:\\x00|[ \\t\\u00a0\\u2000-\\u200b\\u200e\\u200f\\u3000\\ufeff]|&nbsp;)+")
_NEWLINE = re.compile(NL)
_WHITESPACE = re.compile(f"{SP}|{NL}")
# Fast path for the common case, an ASCII word (letter first) followed by one plain punctuation mark and then
# whitespace: no rule can match longer there, unless the word is an assimilation or the word and its
# period form an abbreviation, or the period starts a spaced ellipsis; those go through the rules.
_SIMPLE = re.compile("([A-Za-z][A-Za-z0-9]*)([.,;:]|[?!]+)?(?: +|(?=\\n)|\\Z)")
# Digits followed by the end of the line, or by spaces and a non-digit (a digit could start a phone number
# or a "5 1/2" fraction).
_SIMPLE_NUMBER = re.compile(f"[0-9]+(?=\\n|\\Z| +(?:[^ {_DIG}]|\\Z))")
_ASSIMILATED = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})
_ABBREV_DOT = re.compile(f"(?:{_ABBREV1}|{ABBREV4}\\.|{ABBREV3})")


def _acronym(text: str) -> tuple[str, int]:
    """``processAcronym``: ``X.`` -> ``X`` + ``.``; ``U.S.`` -> ``U.S.`` + ``.`` (period reduplicated)."""
    if len(text) == 2:
        return text[0], 1
    return text, len(text) - 1


def ptb_raw_tokens(text: str) -> list[list[str]]:
    """Lex ``text`` like ``PTBTokenizer -preserveLines`` (no lower-casing, no filter): tokens per line."""
    lines: list[list[str]] = [[]]
    pos, end = 0, len(text)
    while pos < end:
        simple = _SIMPLE.match(text, pos)
        if simple is not None:
            word, mark = simple.groups()
            if word.lower() not in _ASSIMILATED and (
                mark != "."
                or not (
                    len(word) == 1
                    or _ABBREV_DOT.fullmatch(word + ".")
                    or text.startswith(" .", simple.end(2))
                )
            ):
                lines[-1].append(word)
                if mark:
                    lines[-1].append(mark)
                pos = simple.end()
                continue
        number = _SIMPLE_NUMBER.match(text, pos)
        if number is not None:
            lines[-1].append(number.group())
            pos = number.end()
            continue
        skip = _SKIP.match(text, pos)
        if skip is not None:
            pos = skip.end()
            continue
        newline = _NEWLINE.match(text, pos)
        if newline is not None:
            lines.append([])
            pos = newline.end()
            continue
        best: tuple[int, re.Match[str], _Rule] | None = None
        chunk_end = _WHITESPACE.search(text, pos)
        chunk = frozenset(text[pos : chunk_end.start() if chunk_end else end])
        for rule in _candidates(text[pos]):
            if rule.requires is not None and rule.requires.isdisjoint(chunk):
                continue
            match = rule.regex.match(text, pos)
            if match is not None and (best is None or match.end() > best[0]):
                best = (match.end(), match, rule)
        if best is None:  # untokenizable character: deleted, as with the default "firstDelete"
            pos += 1
            continue
        _, match, rule = best
        token = match.group("m")
        if rule.action == _ACRONYM:
            token, consumed = _acronym(token)
        elif rule.action == _DUP:
            consumed = len(token) - 1
        else:
            consumed = len(token) - rule.pushback
            token = rule.action(token[:consumed])  # type: ignore[operator]
        if token:
            lines[-1].append(token)
        pos += consumed
    return lines


def _finish(tokens: list[str]) -> str:
    # Java prints the tokens space-separated and lower-cased; pycocoevalcap rstrips the line, splits it on
    # " " and drops PUNCTUATIONS.
    line = " ".join(t.lower() for t in tokens).rstrip()
    return " ".join(w for w in line.split(" ") if w not in PUNCTUATIONS)


# Caption fast path ---------------------------------------------------------------------------------
def _by_first_letter(alternatives: list[str]) -> str:
    """``a|b|...`` regrouped as ``[mM](?i:rs?|s|...)|...``, matching the same words in any case.

    Python's regex engine skips a branch whose first item is a character class that fails, but enters
    every case-insensitive literal branch: grouped, a word enters the branches of its first letter only
    instead of all ~150.
    """
    groups: dict[str, list[str]] = {}
    for alternative in alternatives:
        first = alternative[0].lower()
        if not first.isalpha() or alternative[1:2] in ("?", "*", "+", "{"):
            raise ValueError(f"{alternative!r} does not start with a letter of its own")
        groups.setdefault(first, []).append(alternative[1:])
    return "|".join(f"[{c}{c.upper()}](?i:{'|'.join(rest)})" for c, rest in sorted(groups.items()))


# Almost every caption is ASCII words, clitics, numbers, brackets and plain punctuation. On the language
# below the rules' longest match at each token start is known in advance, so its tokens are made with a few
# string operations instead of trying every rule at every position. Why each piece lexes as they assume:
# * a core [A-Za-z0-9]+(-[A-Za-z0-9]+)* is one token (WORD, thing or HTHING, or a phone number or date
#   of the same text): every rule that matches longer needs a character the language excludes (such as
#   & + / @ $ # % _ < > = * ` or non-ASCII) or a period, ! or ? followed by a letter or digit (excluded);
#   the guards reject the rules that only fire on particular words (assimilations such as ``gonna``, an
#   abbreviation or single letter before its period, ``cont'd.``) and the trailing contexts the language
#   could contain (``man.,`` keeps its period, ``:)`` is a smiley, ``(xx)`` and ``(x-x)`` are smileys);
# * clitics (lower case only, as captions write them) follow a word of letters only and split off as the
#   rules split them (``man 's``, ``is n't``, not after ``n`` as in ``dunn't``); the words that tie with
#   a clitic (``d've``, ``y'd``, ``ca'd``) go to the earlier WORD rule, as in the rules;
# * digits never follow "<digit or )><space>", the only way a token (phone number, "5 1/2") spans a space;
# * the other characters (. , ; : " ! ? and brackets) lex as one-character tokens, dropped by the filter
#   except brackets (-lrb- etc.), or as runs: of ! and ? (one token, dropped when a single character) and
#   of periods, spaced or not (dropped).
# Everything else goes through the rules. tests/metrics/test_metrics_ptb_fast.py checks the fast path
# against the rules (on generated captions and on all small combinations of tricky pieces) and Java.
#
# Every word that is an abbreviation before its period in some rule (case ignored, so a superset), as
# top-level alternatives; single letters (ACRO) are added below.
_FAST_ABBREVIATIONS = _by_first_letter(
    "|".join(
        [_MONTHS_DAYS, _STATES_CI, _COMP, _OTHER1, _TITLES, "miss", "|".join(_STATES_CS), _WORDS3]
    ).split("|")
)
_FAST_GUARD = (
    "(?![0-9](?<=[0-9)] .))"
    f"(?!(?=[A-Za-z]+\\.)(?:[A-Za-z]|{_FAST_ABBREVIATIONS})\\.)"
    "(?!(?=[cCgGlLwW])(?i:(?:cannot|gonna|gotta|lemme|gimme|wanna)(?![A-Za-z0-9])|cont'))"
)
_FAST_CORE = (
    f"{_FAST_GUARD}(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*"
    "|[A-Za-z]+(?:'(?:[smd]|re|ve|ll)|(?<=[A-MO-Za-mo-z]n)'t))(?!\\.[,;:])"
)
_FAST_OPEN = '(?:["\\[{]|\\((?!x[x-]))'
_FAST_TAIL = '(?:[")\\]}.,!?]|[:;](?![()\\[\\]{}]))'
_FAST_PUNCT = '(?:["()\\[\\]{}.,!?]|[:;](?![()\\[\\]{}]))'
_FAST_CHUNK = f"(?:{_FAST_OPEN}*{_FAST_CORE}{_FAST_TAIL}*|{_FAST_PUNCT}+)"
# Lookarounds only, no alternative that can match the same text in two ways: a failed match backtracks
# in linear time.
_FAST_CAPTION = re.compile(f" *(?:{_FAST_CHUNK}(?: +{_FAST_CHUNK})*)? *")
# Characters that only ever make dropped tokens in the fast language (periods there are never part of a
# kept token: abbreviations and "man.," are refused). ASCII to ASCII, so str.translate takes its fast path.
_FAST_DROPPED = str.maketrans(dict.fromkeys('.,;:"', " "))
_FAST_MARKS = re.compile("[?!]+")
_FAST_BRACKETS = (
    ("(", " -lrb- "),
    (")", " -rrb- "),
    ("[", " -lsb- "),
    ("]", " -rsb- "),
    ("{", " -lcb- "),
    ("}", " -rcb- "),
)


def _marks(match: re.Match[str]) -> str:
    """A run of ``!``/``?`` is one token, dropped by pycocoevalcap when it is a single character."""
    run = match.group()
    return " " if len(run) == 1 else f" {run} "


def _fast_tokenize(text: str) -> list[str]:
    """Final tokens of newline-separated captions that all fullmatch ``_FAST_CAPTION``, one per caption.

    A few passes of string methods over the whole text instead of work per token or per caption: dropped
    marks become spaces, kept marks and brackets get spaces around them, clitics are split off (in the
    fast language an apostrophe only starts a clitic and ``'t`` only follows the ``n`` of ``n't``), then
    the spaces are normalized.
    """
    text = text.translate(_FAST_DROPPED)
    if "!" in text or "?" in text:
        text = _FAST_MARKS.sub(_marks, text)
    for bracket, token in _FAST_BRACKETS:
        if bracket in text:
            text = text.replace(bracket, token)
    if "'" in text:
        text = text.replace("'", " '").replace("n 't", " n't")
    while "  " in text:
        text = text.replace("  ", " ")
    return text.replace(" \n", "\n").replace("\n ", "\n").strip(" ").lower().split("\n")


def _general_tokenize(caption: str) -> str:
    """:func:`ptb_tokenize` through the lexer rules only (the reference of the fast path)."""
    return _finish(ptb_raw_tokens(caption.replace("\n", " ") + "\n")[0])


@lru_cache(maxsize=1 << 16)
def ptb_tokenize(caption: str) -> str:
    """Tokenize one caption exactly as pycocoevalcap would (lower-cased, punctuation dropped).

    The caption is lexed as if followed by a newline and a lower-case line (see module docstring).
    """
    if _FAST_CAPTION.fullmatch(caption) is not None:
        return _fast_tokenize(caption)[0]
    return _general_tokenize(caption)


def ptb_tokenize_batch(captions: Sequence[str]) -> list[str]:
    """:func:`ptb_tokenize` of each caption, for many captions at once (the same strings, faster).

    Repeated captions are tokenized once, and all fast-path captions together in one pass over their
    joined text; the others go through :func:`ptb_tokenize` (and its cache).
    """
    unique = list(dict.fromkeys(captions))
    fast = list(filter(_FAST_CAPTION.fullmatch, unique))
    result = dict(zip(fast, _fast_tokenize("\n".join(fast))))
    if len(result) < len(unique):
        for caption in unique:
            if caption not in result:
                result[caption] = ptb_tokenize(caption)
    return list(map(result.__getitem__, captions))


def ptb_tokenize_lines(captions: Sequence[str]) -> list[str]:
    """Tokenize captions exactly like one pycocoevalcap ``PTBTokenizer.tokenize`` call on them, in order.

    Unlike :func:`ptb_tokenize` this reproduces the context the Java lexer sees across captions and at
    the end of the file. Captions must not contain carriage returns or other line separators (they
    would shift pycocoevalcap's line alignment).
    """
    lines = ptb_raw_tokens("\n".join(c.replace("\n", " ") for c in captions))
    return [_finish(lines[i]) if i < len(lines) else "" for i in range(len(captions))]


if __name__ == "__main__":  # pragma: no cover - manual use: echo "A man's dog." | python -m ...
    for row in sys.stdin:
        print(ptb_tokenize(row.rstrip("\n")))
