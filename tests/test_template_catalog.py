"""The table of every text in docs/channels.md is the code's own (pure, no I/O)."""

from __future__ import annotations

from notifier import template_catalog


def test_the_docs_table_of_every_text_matches_the_code() -> None:
    doc = template_catalog.DOC.read_text("utf-8")
    assert template_catalog.current_doc_section(doc) == template_catalog.markdown(), (
        "docs/channels.md is out of date: run python -m notifier.template_catalog"
    )


def test_every_text_reads_naturally() -> None:
    texts = [text for _key, _when, text in template_catalog.rows()]
    assert len(texts) > 30
    for text in texts:
        assert "触发" not in text, text  # 检测到跌倒, not 触发跌倒
        assert "报警警报" not in text and "预警警报" not in text, text
        assert "，。" not in text and "。。" not in text, text
        assert text.count("（") == text.count("）"), text
