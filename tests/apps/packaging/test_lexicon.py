"""Bilingual lexicon: longest-match segmentation with and without spaces."""

from __future__ import annotations

from kiln.apps.packaging.lexicon import default_lexicon


def english(text: str) -> list[str]:
    return [m.concept.english for m in default_lexicon().segment(text).matches]


def test_lexicon_has_hundreds_of_entries() -> None:
    assert len(default_lexicon().entries) >= 500


def test_chinese_with_and_without_spaces() -> None:
    spaced = english("清新 夏日限定 饮料 年轻女性")
    assert spaced == ["fresh", "summer", "beverage", "young women"]
    assert english("清新夏日限定饮料年轻女性") == spaced
    assert english("清新，夏日限定、饮料/年轻女性") == spaced


def test_english_phrases_match_at_word_boundaries() -> None:
    assert english("fresh, summer limited, beverage, Gen-Z women") == ["fresh", "summer", "beverage", "young women"]
    assert english("luxury, black gold, perfume") == ["luxury", "black and gold", "perfume"]
    assert english("teal") == ["teal"]  # not "tea" inside "teal"


def test_unknown_words_are_reported() -> None:
    result = default_lexicon().segment("zzyzx 国潮 未知词")
    assert [m.concept.english for m in result.matches] == ["Chinese guochao"]
    assert result.unknown == ["zzyzx", "未知词"]
