"""Real-shaped CRM exports written from a generated world, each with the mapping a user would write.

Real exports hold one row per deal in its final state, named and formatted the CRM's way, with
blanks, same-day closes and rows out of order. Each builder writes such an export (and its
mapping file) into a folder; the tests import it through `forecast data import --mapping`, as a
user would, and then ask `doctor` and `train win` about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables

SF_STAGES = {
    "prospecting": "Prospecting",
    "qualification": "Qualification",
    "proposal": "Proposal/Price Quote",
    "negotiation": "Negotiation/Review",
    "closed_won": "Closed Won",
    "closed_lost": "Closed Lost",
}
HUBSPOT_STAGES = {
    "prospecting": "Appointment Scheduled",
    "qualification": "Qualified To Buy",
    "proposal": "Presentation Scheduled",
    "negotiation": "Contract Sent",
    "closed_won": "Closed Won",
    "closed_lost": "Closed Lost",
}
ZOHO_STAGES = {
    "prospecting": "Qualification",
    "qualification": "Needs Analysis",
    "proposal": "Proposal/Price Quote",
    "negotiation": "Negotiation/Review",
    "closed_won": "Closed Won",
    "closed_lost": "Closed-Lost to Competition",
}


@dataclass(frozen=True)
class Export:
    """One export to import: its folder, the mapping, the bad-row flag a user would pass."""

    folder: Path
    mapping: Path
    bad_rows: str = "refuse"

    def import_args(self) -> list[str]:
        args = ["data", "import", str(self.folder), "--mapping", str(self.mapping)]
        return [*args, "--bad-rows", self.bad_rows]


def first_values(tables: CrmTables) -> pd.DataFrame:
    """Each deal's amount and expected close as first recorded (what an honest export keeps)."""
    history = tables.deal_history.sort_values(["deal_id", "changed_at"])
    return history.drop_duplicates("deal_id").set_index("deal_id")[["amount", "expected_close"]]


def opportunities(tables: CrmTables, stages: dict[str, str]) -> pd.DataFrame:
    """The deals as a Salesforce-like report: one row per deal, its final state."""
    deals = tables.deals
    first = first_values(tables).reindex(deals["deal_id"])
    return pd.DataFrame(
        {
            "Opportunity ID": deals["deal_id"],
            "Owner": deals["rep_id"],
            "Account Name": deals["account_id"],
            "Product": deals["product_id"],
            "Stage": deals["stage"].map(stages),
            "Amount": first["amount"].to_numpy(),
            "Created Date": deals["created_at"].dt.strftime("%Y-%m-%d %H:%M"),
            "Original Close Date": first["expected_close"].dt.strftime("%Y-%m-%d").to_numpy(),
            "Closed Date": deals["closed_at"].dt.strftime("%Y-%m-%d %H:%M"),
            "Lead Source": np.where(deals.index % 3 == 0, "Web", "Partner"),
        }
    )


SF_MAPPING = """\
as_of: {as_of}
tables:
  deals:
    file: Opportunities.csv
    columns:
      deal_id: Opportunity ID
      rep_id: Owner
      account_id: Account Name
      product_id: Product
      stage: Stage
      amount: Amount
      created_at: Created Date
      expected_close: Original Close Date
      closed_at: Closed Date
    values:
      stage: {stages}
    derive:
      outcome: from_stage
"""


def _stage_map(stages: dict[str, str]) -> str:
    return "{" + ", ".join(f"{v!r}: {k}" for k, v in stages.items()) + "}"


def _write(folder: Path, files: dict[str, pd.DataFrame], mapping: str, **kw) -> Export:
    folder.mkdir(parents=True)
    for name, frame in files.items():
        frame.to_csv(folder / name, index=False, sep=kw.pop("sep", ","))
    (folder / "mapping.yaml").write_text(mapping)
    return Export(folder, folder / "mapping.yaml", kw.get("bad_rows", "refuse"))


def _sf(tables: CrmTables, folder: Path, frame: pd.DataFrame, bad_rows: str = "refuse") -> Export:
    mapping = SF_MAPPING.format(as_of=f"{tables.as_of:%Y-%m-%d}", stages=_stage_map(SF_STAGES))
    return _write(folder, {"Opportunities.csv": frame}, mapping, bad_rows=bad_rows)


def one_row_per_deal(tables: CrmTables, folder: Path) -> Export:
    return _sf(tables, folder, opportunities(tables, SF_STAGES))


def deals_and_users(tables: CrmTables, folder: Path) -> Export:
    export = one_row_per_deal(tables, folder)
    reps = tables.reps
    users = pd.DataFrame(
        {
            "User": reps["rep_id"],
            "Manager": reps["manager_id"],
            "Title": reps["role"],
            "Team": reps["team"],
            "Region": reps["region"],
            "Start": reps["hired_at"].dt.strftime("%Y-%m-%d"),
        }
    )
    users.to_csv(folder / "Users.csv", index=False)
    text = export.mapping.read_text() + (
        "  reps:\n    file: Users.csv\n    columns: {rep_id: User, manager_id: Manager, "
        "role: Title, team: Team, region: Region, hired_at: Start}\n"
    )
    export.mapping.write_text(text)
    return export


def _close_day(tables: CrmTables) -> pd.Series:
    """The one close date a deals-only export has: the day it closed, else the expected one."""
    deals = tables.deals
    return deals["closed_at"].dt.normalize().fillna(deals["expected_close"])


def hubspot_style(tables: CrmTables, folder: Path) -> Export:
    """HubSpot's deals export with its own column labels, read through the hubspot preset."""
    deals = tables.deals
    frame = pd.DataFrame(
        {
            "Record ID": deals["deal_id"],
            "Deal Name": "Deal " + deals["deal_id"],
            "Deal owner": deals["rep_id"],
            "Associated Company IDs": deals["account_id"],
            "Deal Stage": deals["stage"].map(HUBSPOT_STAGES),
            "Amount": first_values(tables)["amount"].reindex(deals["deal_id"]).to_numpy(),
            "Create Date": deals["created_at"].dt.strftime("%Y-%m-%d %H:%M"),
            "Close Date": _close_day(tables).dt.strftime("%Y-%m-%d"),
            "Deal Type": np.where(deals.index % 2 == 0, "newbusiness", "existingbusiness"),
        }
    )
    mapping = f"""\
preset: hubspot
as_of: {tables.as_of:%Y-%m-%d}
tables:
  deals:
    columns: {{expected_close: "-"}}
"""
    return _write(folder, {"deals.csv": frame}, mapping)


def zoho_style(tables: CrmTables, folder: Path) -> Export:
    """Zoho's Deals export, day-first dates and decimal commas, through the zoho preset."""
    deals = tables.deals
    amount = first_values(tables)["amount"].reindex(deals["deal_id"]).to_numpy()
    frame = pd.DataFrame(
        {
            "Record Id": deals["deal_id"],
            "Deal Owner": deals["rep_id"],
            "Account Name": deals["account_id"],
            "Stage": deals["stage"].map(ZOHO_STAGES),
            "Amount": [f"{v:.2f}".replace(".", ",") for v in amount],
            "Created Time": deals["created_at"].dt.strftime("%d/%m/%Y %H:%M"),
            "Closing Date": _close_day(tables).dt.strftime("%d/%m/%Y"),
        }
    )
    mapping = f"""\
preset: zoho
as_of: {tables.as_of:%Y-%m-%d}
defaults: {{delimiter: ";", date_format: "%d/%m/%Y", decimal: ","}}
tables:
  deals:
    date_formats: {{created_at: "%d/%m/%Y %H:%M"}}
    columns: {{expected_close: "-"}}
"""
    folder.mkdir(parents=True)
    frame.to_csv(folder / "Deals.csv", index=False, sep=";")
    (folder / "mapping.yaml").write_text(mapping)
    return Export(folder, folder / "mapping.yaml")


def with_blanks(tables: CrmTables, folder: Path) -> Export:
    """Blank amounts on a third of open and lost deals, blank owners on a tenth of all."""
    frame = opportunities(tables, SF_STAGES)
    rng = np.random.default_rng(0)
    not_won = (tables.deals["outcome"] != "won").to_numpy()
    frame.loc[not_won & (rng.random(len(frame)) < 0.33), "Amount"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.1, "Owner"] = ""
    return _sf(tables, folder, frame)


def same_day_closes(tables: CrmTables, folder: Path) -> Export:
    """A tenth of the closed deals created and closed the same minute."""
    frame = opportunities(tables, SF_STAGES)
    closed = frame["Closed Date"].notna().to_numpy()
    pick = closed & (np.arange(len(frame)) % 10 == 0)
    frame.loc[pick, "Created Date"] = frame.loc[pick, "Closed Date"]
    return _sf(tables, folder, frame)


def _close_before_create(tables: CrmTables, folder: Path, bad_rows: str) -> Export:
    frame = opportunities(tables, SF_STAGES)
    closed = np.flatnonzero(frame["Closed Date"].notna().to_numpy())[:5]
    later = pd.to_datetime(frame.loc[closed, "Closed Date"]) + pd.Timedelta(days=3)
    frame.loc[closed, "Created Date"] = later.dt.strftime("%Y-%m-%d %H:%M").to_numpy()
    return _sf(tables, folder, frame, bad_rows)


def close_before_create_quarantined(tables: CrmTables, folder: Path) -> Export:
    return _close_before_create(tables, folder, "quarantine")


def close_before_create_repaired(tables: CrmTables, folder: Path) -> Export:
    return _close_before_create(tables, folder, "repair")


def extra_columns(tables: CrmTables, folder: Path) -> Export:
    """Columns with no home in the contract become deal attributes, each with when it is known.

    Lead source, campaign and a custom score are known at creation (features); the loss reason
    is filled at the close (kept, never a feature).
    """
    lost = (tables.deals["outcome"] == "lost").to_numpy()
    frame = opportunities(tables, SF_STAGES).assign(
        **{
            "Campaign": np.where(np.arange(len(tables.deals)) % 5 == 0, "Spring", "Autumn"),
            "Custom_Score__c": np.arange(len(tables.deals)) % 7,
            "Loss Reason": np.where(lost, "Price", ""),
        }
    )
    export = _sf(tables, folder, frame)
    export.mapping.write_text(
        export.mapping.read_text()
        + """    attributes:
      lead_source: {column: Lead Source, known_at: created}
      campaign: {column: Campaign, known_at: created}
      custom_score: {column: Custom_Score__c, known_at: created}
      loss_reason: {column: Loss Reason, known_at: closed}
"""
    )
    return export


def lead_funnel(tables: CrmTables, folder: Path) -> Export:
    """Leads that convert or are disqualified: one stage while open, no amounts, no products."""
    deals = tables.deals
    status = deals["outcome"].map({"won": "Converted", "lost": "Disqualified", "open": "Working"})
    frame = pd.DataFrame(
        {
            "Lead ID": deals["deal_id"],
            "Lead Owner": deals["rep_id"],
            "Company": deals["account_id"],
            "Status": status,
            "Created": deals["created_at"].dt.strftime("%Y-%m-%d %H:%M"),
            "Converted/Closed": deals["closed_at"].dt.strftime("%Y-%m-%d %H:%M"),
            "Lead Source": np.where(deals.index % 4 == 0, "Web", "Event"),
        }
    )
    mapping = f"""\
as_of: {tables.as_of:%Y-%m-%d}
tables:
  deals:
    file: leads.csv
    columns: {{deal_id: Lead ID, rep_id: Lead Owner, account_id: Company, stage: Status,
              created_at: Created, closed_at: Converted/Closed}}
    values:
      stage: {{Working: prospecting, Converted: closed_won, Disqualified: closed_lost}}
    derive: {{outcome: from_stage}}
"""
    return _write(folder, {"leads.csv": frame}, mapping)


def too_few_closed(tables: CrmTables, folder: Path) -> Export:
    """60 deals: training must refuse and say how many closed deals it needs."""
    frame = opportunities(tables, SF_STAGES).head(60)
    return _sf(tables, folder, frame)


def nine_months(tables: CrmTables, folder: Path) -> Export:
    """Only the last nine months of deals."""
    frame = opportunities(tables, SF_STAGES)
    start = tables.as_of - pd.Timedelta(days=270)
    return _sf(tables, folder, frame[tables.deals["created_at"].to_numpy() >= start])


def order_log(tables: CrmTables, folder: Path) -> Export:
    """An order-level transaction log mapped as won deals: there is nothing lost to learn from."""
    deals = tables.deals[tables.deals["outcome"] == "won"]
    frame = pd.DataFrame(
        {
            "InvoiceNo": deals["deal_id"],
            "CustomerID": deals["account_id"],
            "InvoiceDate": deals["closed_at"].dt.strftime("%m/%d/%Y %H:%M"),
            "Total": deals["amount"],
        }
    )
    mapping = f"""\
as_of: {tables.as_of:%Y-%m-%d}
tables:
  deals:
    file: orders.csv
    date_formats: {{created_at: "%m/%d/%Y %H:%M", closed_at: "%m/%d/%Y %H:%M"}}
    columns: {{deal_id: InvoiceNo, account_id: CustomerID, created_at: InvoiceDate,
              closed_at: InvoiceDate, amount: Total}}
    constants: {{stage: closed_won, outcome: won}}
"""
    return _write(folder, {"orders.csv": frame}, mapping)


EXPORTS: dict[str, Callable[[CrmTables, Path], Export]] = {
    "one-row-per-deal": one_row_per_deal,
    "deals-and-users": deals_and_users,
    "hubspot-style": hubspot_style,
    "zoho-style": zoho_style,
    "blank-amounts-and-owners": with_blanks,
    "same-day-closes": same_day_closes,
    "close-before-create-quarantined": close_before_create_quarantined,
    "close-before-create-repaired": close_before_create_repaired,
    "extra-columns": extra_columns,
    "lead-funnel": lead_funnel,
    "too-few-closed": too_few_closed,
    "nine-months": nine_months,
    "order-log": order_log,
}
