"""Retrieval: the shipped passages and the offline all-MiniLM-L6-v2 index."""

from __future__ import annotations

import json

import pytest

from medreason_utils.ui.retrieval import Hit, Passage, PassageIndex, format_context, load_passages


def test_shipped_passages_are_well_formed():
    passages = load_passages()
    assert 30 <= len(passages) <= 60
    assert len({p.id for p in passages}) == len(passages)
    assert all(20 <= len(p.text) <= 600 and p.title for p in passages)


def test_load_passages_names_the_bad_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "x"}) + "\n" + json.dumps({"id": "b", "text": " "}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: field 'text'"):
        load_passages(f)
    f.write_text(json.dumps({"id": "a", "text": "x"}) + "\n" + json.dumps({"id": "a", "text": "y"}) + "\n")
    with pytest.raises(ValueError, match="id 'a' occurs twice"):
        load_passages(f)
    with pytest.raises(FileNotFoundError):
        load_passages(tmp_path / "missing.jsonl")


def test_format_context():
    hits = [Hit(Passage("a", "A", "alpha."), 0.9), Hit(Passage("b", "B", "beta."), 0.5)]
    assert format_context(hits) == "[1] A: alpha.\n[2] B: beta."
    assert format_context([]) == ""


@pytest.fixture(scope="module")
def index():
    return PassageIndex()


@pytest.mark.slow
@pytest.mark.parametrize("query, expected", [
    ("Which antibiotic cannot treat methicillin-resistant Staphylococcus aureus?", "mrsa"),
    ("What slows the heart when blood pressure rises?", "baroreflex"),
    ("A child drools and cannot swallow, with a swollen epiglottis", "epiglottitis"),
    ("needle-shaped negatively birefringent crystals in the big toe", "gout"),
])
def test_index_finds_the_relevant_passage(index, query, expected):
    hits = index.search(query, k=3)
    assert len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert expected in [h.passage.id for h in hits[:2]], [(h.passage.id, round(h.score, 2)) for h in hits]
    assert -1.0 <= hits[-1].score <= hits[0].score <= 1.0


@pytest.mark.slow
def test_index_shape_and_errors(index):
    assert index.embeddings.shape == (len(index), 384)
    assert len(index.search("insulin", k=100)) == len(index)
    with pytest.raises(ValueError, match="non-blank"):
        index.search("  ")
    with pytest.raises(ValueError, match="k must be"):
        index.search("insulin", k=0)
