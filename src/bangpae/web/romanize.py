"""Korean place names in the Latin alphabet, by the Revised Romanization of Korean (2000).

The boundary data names places in Korean only; the English map shows them as the
Revised Romanization writes them on road signs: "종로구" is "Jongno-gu", "전라남도" is
"Jeollanam-do". The system spells the sounds, so consonants that change at a syllable
joint are written as they are heard (ㅇ+ㄹ is "ngn", ㄴ+ㄹ is "ll", ㄱ+ㄴ is "ngn"), and
an administrative unit (시, 군, 구, 도) is joined by a hyphen, with no change across it.
See docs/maps.md.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = 0xAC00
INITIALS = "g kk n d tt r m b pp s ss - j jj ch k t p h".replace("-", "").split(" ")
VOWELS = "a ae ya yae eo e yeo ye o wa wae oe yo u wo we wi yu eu ui i".split()
# A final consonant by its index: the sound it has at the end of a syllable (K, N, T, L,
# M, P, NG, or "" for none), and the initial it becomes before a vowel (liaison).
FINALS: tuple[tuple[str, int | None], ...] = (
    ("", None), ("K", 0), ("K", 1), ("K", 9), ("N", 2), ("N", 12), ("N", 11), ("T", 3),
    ("L", 5), ("K", 0), ("M", 6), ("L", 7), ("L", 9), ("L", 16), ("P", 17), ("L", 11),
    ("M", 6), ("P", 7), ("P", 9), ("T", 9), ("T", 10), ("NG", None), ("T", 12), ("T", 14),
    ("K", 15), ("T", 16), ("P", 17), ("T", 11),
)  # fmt: skip
SPELL = {"": "", "K": "k", "N": "n", "T": "t", "L": "l", "M": "m", "P": "p", "NG": "ng"}
I_N, I_R, I_M, I_NULL, I_H = 2, 5, 6, 11, 18
UNITS = {"시": "si", "군": "gun", "구": "gu", "도": "do", "읍": "eup", "면": "myeon", "동": "dong"}
# 특별시, 광역시 and 특별자치시 are known by the city's name alone in English.
CITY_TITLES = ("특별자치시", "특별시", "광역시")


@dataclass
class _Syllable:
    initial: int  # index into INITIALS
    vowel: int  # index into VOWELS
    final: str  # its sound: "", K, N, T, L, M, P or NG
    jamo: int  # the final consonant's index into FINALS (for liaison)


def _syllables(word: str) -> list[_Syllable]:
    out = []
    for ch in word:
        code = ord(ch) - BASE
        if not 0 <= code < 11172:
            raise ValueError(f"not a Hangul syllable: {ch!r}")
        out.append(_Syllable(code // 588, (code % 588) // 28, FINALS[code % 28][0], code % 28))
    return out


def romanize(word: str) -> str:
    """One word of Hangul syllables in the Revised Romanization, lower case."""
    syl = _syllables(word)
    for a, b in zip(syl, syl[1:], strict=False):
        final, initial = a.final, b.initial
        if initial == I_NULL and final not in ("", "NG"):  # liaison: the final begins the next
            moved = FINALS[a.jamo][1]
            a.final, b.initial = "", I_NULL if moved is None else moved
        elif initial in (I_N, I_M):  # nasalisation
            a.final = {"K": "NG", "T": "N", "P": "M"}.get(final, final)
            if final == "L" and initial == I_N:
                b.initial = I_R
        elif initial == I_R:
            if final in ("N", "L"):
                a.final = "L"
            elif final in ("M", "NG"):
                b.initial = I_N
            elif final in ("K", "T", "P"):
                a.final, b.initial = {"K": "NG", "T": "N", "P": "M"}[final], I_N
    text = ""
    for i, s in enumerate(syl):
        first = INITIALS[s.initial]
        if s.initial == I_R and i > 0 and syl[i - 1].final == "L":
            first = "l"  # ㄹㄹ is "ll"
        text += first + VOWELS[s.vowel] + SPELL[s.final]
    return text


def place_name(name: str) -> str:
    """A Korean administrative name as written in English: "종로구" is "Jongno-gu"."""
    name = name.strip()
    for title in CITY_TITLES:
        if name.endswith(title) and len(name) > len(title):
            return romanize(name[: -len(title)]).capitalize()
    if name.endswith("특별자치도"):
        name = name[: -len("특별자치도")] + "도"
    stem, unit = name[:-1], name[-1:]
    if unit in UNITS and len(stem) >= 1:
        return f"{romanize(stem).capitalize()}-{UNITS[unit]}"
    return romanize(name).capitalize()
