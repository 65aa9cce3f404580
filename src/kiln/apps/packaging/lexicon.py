"""The bilingual design lexicon: Chinese and English brief words → style weights and colour hints.

Segmentation is dictionary longest-match (no jieba): it works on Chinese with or without spaces
("清新夏日限定" and "清新 夏日限定" give the same terms) and on English phrases ("black gold",
"summer limited edition") at word boundaries. The MiniLM encoder is English-only, so each matched
term also contributes its English phrase to the text the encoder sees.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from kiln.errors import KilnError

_SEPARATORS = re.compile(r"[,，、;；/|·•。.!！?？:：()（）\[\]【】\"'“”‘’+&\n\t]+")
_LATIN = re.compile(r"[0-9a-z]")


@dataclass(frozen=True)
class Concept:
    kind: str
    english: str
    styles: dict[str, float]
    light: float = 0.0  # + light, − dark
    cool: float = 0.0  # + cool, − warm
    vivid: float = 0.0  # + vivid, − muted
    hues: tuple[tuple[float, float, float], ...] = ()  # (from, to, weight) in LCh degrees


@dataclass(frozen=True)
class Match:
    surface: str
    concept: Concept
    chinese: bool


@dataclass
class Segmentation:
    matches: list[Match] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def normalise(text: str) -> str:
    """NFKC (full-width → half-width), lower case, separators → single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\s+", " ", _SEPARATORS.sub(" ", text)).strip()


def _parse_weights(text: str, row: int) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition(":")
        try:
            weights[name.strip()] = float(value)
        except ValueError as exc:
            raise KilnError(f"lexicon row {row}: bad weight {part!r}") from exc
    return weights


def _concept(kind: str, english: str, styles: str, hints: str, row: int) -> Concept:
    light = cool = vivid = 0.0
    hues: list[tuple[float, float, float]] = []
    for name, weight in _parse_weights(hints, row).items():
        if name.startswith("hue="):
            start, _, end = name[4:].partition("-")
            hues.append((float(start), float(end), weight))
        elif name in ("light", "dark"):
            light += weight if name == "light" else -weight
        elif name in ("cool", "warm"):
            cool += weight if name == "cool" else -weight
        elif name in ("vivid", "muted"):
            vivid += weight if name == "vivid" else -weight
        else:
            raise KilnError(f"lexicon row {row}: unknown colour hint {name!r}")
    return Concept(kind, english, _parse_weights(styles, row), light, cool, vivid, tuple(hues))


class Lexicon:
    """Surface form → concept, with longest-match segmentation."""

    def __init__(self, entries: dict[str, Concept]) -> None:
        self.entries = entries
        self._longest = max((len(k) for k in entries), default=1)

    @classmethod
    def from_tsv(cls, text: str, known_styles: set[str] | None = None) -> Lexicon:
        entries: dict[str, Concept] = {}
        for row, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            columns = line.split("\t")
            if len(columns) < 5:
                raise KilnError(f"lexicon row {row} has {len(columns)} columns, expected 5 or 6")
            kind, chinese, english, phrase, styles = columns[:5]
            concept = _concept(kind, phrase, styles, columns[5] if len(columns) > 5 else "", row)
            if known_styles is not None and (unknown := set(concept.styles) - known_styles):
                raise KilnError(f"lexicon row {row} names unknown styles {sorted(unknown)}")
            for form in (*chinese.split("|"), *english.split("|")):
                key = normalise(form)
                if key:
                    entries[key] = concept
        return cls(entries)

    def segment(self, text: str) -> Segmentation:
        """Longest dictionary match at each position; Latin matches must sit on word boundaries."""
        norm = normalise(text)
        result = Segmentation()
        position = 0
        unknown_start: int | None = None

        def flush(end: int) -> None:
            nonlocal unknown_start
            if unknown_start is not None:
                piece = norm[unknown_start:end].strip()
                if piece:
                    result.unknown.extend(piece.split())
                unknown_start = None

        while position < len(norm):
            char = norm[position]
            if char == " ":
                flush(position)
                position += 1
                continue
            match = self._match_at(norm, position)
            if match is not None:
                flush(position)
                surface = norm[position : position + match]
                concept = self.entries[surface]
                result.matches.append(Match(surface, concept, not _LATIN.match(surface[0])))
                position += match
                continue
            if unknown_start is None:
                unknown_start = position
            if _LATIN.match(char):  # skip the rest of this Latin word
                while position < len(norm) and (_LATIN.match(norm[position]) or norm[position] == "-"):
                    position += 1
                flush(position)
            else:
                position += 1
                if position < len(norm) and _LATIN.match(norm[position]):
                    flush(position)
        flush(len(norm))
        return result

    def _match_at(self, text: str, start: int) -> int | None:
        latin_start = bool(_LATIN.match(text[start]))
        if latin_start and start > 0 and _LATIN.match(text[start - 1]):
            return None
        for length in range(min(self._longest, len(text) - start), 0, -1):
            candidate = text[start : start + length]
            if candidate not in self.entries:
                continue
            end = start + length
            if _LATIN.match(candidate[-1]) and end < len(text) and (_LATIN.match(text[end]) or text[end] == "-"):
                continue  # "tea" must not match inside "teal"
            return length
        return None


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    from kiln.apps.packaging.styles import taxonomy

    text = resources.files("kiln.apps.packaging").joinpath("data/lexicon.tsv").read_text(encoding="utf-8")
    return Lexicon.from_tsv(text, known_styles={s.id for s in taxonomy()})
