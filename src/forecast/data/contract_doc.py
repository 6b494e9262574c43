"""`docs/data-contract.md` rendered from the schema, so the written contract and the checks cannot
drift apart: `python -m forecast.data.contract_doc docs/data-contract.md` (`make docs`)."""

from __future__ import annotations

from forecast.data.contract import TYPE_TEXT
from forecast.data.schema import TABLES


def render_contract() -> str:
    """The contract as markdown; `docs/data-contract.md` embeds this text verbatim."""
    lines: list[str] = []
    for table in TABLES.values():
        lines += [f"### `{table.name}`", "", table.description, ""]
        if table.key:
            lines += [f"- key: `{', '.join(table.key)}` (unique)"]
        if table.known_at:
            lines += [f"- known at: `{table.known_at}`"]
        if table.time_note:
            lines += [f"- time: {table.time_note}"]
        for check in table.extra_checks:
            lines += [f"- check: {check}"]
        lines += ["", "| column | type | required | empty allowed | rule | meaning |"]
        lines += ["| --- | --- | --- | --- | --- | --- |"]
        for col in table.columns:
            rule = []
            if col.allowed:
                rule.append(", ".join(f"`{v}`" for v in col.allowed))
            if col.references:
                rule.append(f"references `{col.references}`")
            if col.minimum is not None:
                rule.append(f">= {col.minimum:g}")
            if col.maximum is not None:
                rule.append(f"<= {col.maximum:g}")
            lines.append(
                f"| `{col.name}` | {TYPE_TEXT[col.type]} | {'yes' if col.required else 'no'} "
                f"| {'yes' if col.nullable else 'no'} | {'; '.join(rule)} | {col.description} |"
            )
        lines.append("")
    return "\n".join(lines)


BEGIN_MARK = "<!-- BEGIN GENERATED: python -m forecast.data.contract_doc docs/data-contract.md -->"


END_MARK = "<!-- END GENERATED -->"


def embed_contract(document: str) -> str:
    """`document` with the text between the generated-section markers replaced by the contract."""
    head, _, rest = document.partition(BEGIN_MARK)
    _, _, tail = rest.partition(END_MARK)
    return f"{head}{BEGIN_MARK}\n\n{render_contract()}\n{END_MARK}{tail}"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    target = Path(sys.argv[1])
    target.write_text(embed_contract(target.read_text(encoding="utf-8")), encoding="utf-8")
