"""Adapter for the public IBM "Telco Customer Churn" sample (ibm-telco-churn).

7,043 customers of a fictional telco in one snapshot, 26.5 % of whom left "within the last
month". The data has no dates at all (only `tenure` in months), so the canonical tables get a
synthetic calendar anchored at `as_of`, chosen so that churn is what the contract can see: a
month's revenue is known once the month has ended, and churn is revenue that stops.

Calendar (for the default as_of 2020-01-01; M = the last month ended by as_of, 2019-12)
    Retained customers (Churn=No) pay every month up to and including M: `tenure` monthly rows
    ending in M, and `created_at` = the start of the first one = as_of - tenure months.
    Churned customers (Churn=Yes) left during M: their `tenure` paid months end in M-1, M has
    no revenue, and `created_at` = as_of - (tenure + 1) months. So at as_of a churned
    account is one that billed in M-1 and not in M, which is knowable at as_of; nothing is
    recorded after as_of. The 11 customers with tenure 0 (blank TotalCharges, all retained)
    joined in as_of's month: `created_at` is the start of that month and they have no revenue
    row yet. The current contract type is applied to the whole tenure (no history exists).
revenue
    One `recurring` row per customer and paid month, amount = MonthlyCharges (the whole bill;
    the data has no per-service amounts), booked on the customer's main service: its internet
    product (`internet_dsl` or `internet_fiber_optic`), else `phone`. `contract_end` is the end
    of the current term: the month's last day for Month-to-month, else the last day of the
    running 12- or 24-month term counted from `created_at`.
products
    The services: phone, multiple_lines, internet_dsl, internet_fiber_optic, online_security,
    online_backup, device_protection, tech_support, streaming_tv, streaming_movies, all
    `subscription`. The data has no price list, but MonthlyCharges is almost exactly the sum of
    per-service prices (mean error below $1), so `list_price` is the yearly price fitted by least
    squares (12 x the monthly coefficient, e.g. phone about 240).
accounts
    `account_id` = customerID; B2C customers, so industry `consumer`, segment `smb` (the
    smallest segment), region `California` (IBM's description of the sample) and no head count.
reps
    One placeholder rep (`telco-rep`, team `Telco`, region `California`) owns every account,
    so references resolve; hired at the earliest `created_at`.

`telco_features` gives the classic modelling frame instead (all attributes, label 1 = churn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data.sources import RawTable
from forecast.data.sources.mapping import read_with_columns

FILE_NAME = "Telco-Customer-Churn.csv"
INDUSTRY = "consumer"
SEGMENT = "smb"
REGION = "California"
REP_ID = "telco-rep"
TEAM = "Telco"
CONTRACT_MONTHS = {"Month-to-month": 1, "One year": 12, "Two year": 24}
# product_id -> (name, family); prices are fitted from the bills in `_products`.
SERVICES: dict[str, tuple[str, str]] = {
    "phone": ("Phone service", "Phone"),
    "multiple_lines": ("Multiple lines", "Phone"),
    "internet_dsl": ("DSL internet", "Internet"),
    "internet_fiber_optic": ("Fiber optic internet", "Internet"),
    "online_security": ("Online security", "Internet add-on"),
    "online_backup": ("Online backup", "Internet add-on"),
    "device_protection": ("Device protection", "Internet add-on"),
    "tech_support": ("Tech support", "Internet add-on"),
    "streaming_tv": ("Streaming TV", "Streaming"),
    "streaming_movies": ("Streaming movies", "Streaming"),
}
ADD_ON_COLUMNS = {
    "multiple_lines": "MultipleLines",
    "online_security": "OnlineSecurity",
    "online_backup": "OnlineBackup",
    "device_protection": "DeviceProtection",
    "tech_support": "TechSupport",
    "streaming_tv": "StreamingTV",
    "streaming_movies": "StreamingMovies",
}
YES_NO_COLUMNS = ("Partner", "Dependents", "PhoneService", "PaperlessBilling")
# The columns the adapter reads (the others only feed `telco_features`).
COLUMNS = (
    "customerID",
    "tenure",
    "Churn",
    "Contract",
    "MonthlyCharges",
    "PhoneService",
    "InternetService",
    *ADD_ON_COLUMNS.values(),
)
CATEGORY_COLUMNS = (
    "gender",
    "MultipleLines",
    "InternetService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
    "Contract",
    "PaymentMethod",
)


def read_telco_churn(
    folder: Path, *, as_of: str | pd.Timestamp = "2020-01-01"
) -> tuple[dict[str, RawTable], pd.Timestamp]:
    """Map the telco customers in `folder` onto reps, accounts, products and revenue.

    Args:
        folder: the folder holding Telco-Customer-Churn.csv.
        as_of: the export's as-of the synthetic calendar is anchored at (best the first day of
            a month: then `created_at` = as_of - tenure months for retained customers).

    Returns:
        The raw tables (text, with the CSV's line numbers where a row comes from a customer) and
        the as-of. The calendar is described in the module docstring.
    """
    as_of = pd.Timestamp(as_of)
    customers = read_with_columns(
        Path(folder) / FILE_NAME, "accounts", COLUMNS, what="the IBM telco churn dataset"
    )
    calendar = _calendar(customers, as_of)
    raw = {
        "reps": _reps(customers, calendar),
        "accounts": _accounts(customers, calendar),
        "products": _products(customers),
        "revenue": _revenue(customers, calendar),
    }
    return raw, as_of


def telco_features(folder: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The classic churn modelling frame: one row per customer, indexed by customerID.

    All 19 attributes are kept. `TotalCharges` is numeric; its 11 blanks (tenure 0: nothing
    billed yet) become 0.0. `SeniorCitizen` is already 0/1 and the other Yes/No flags
    (Partner, Dependents, PhoneService, PaperlessBilling) become 0/1 too; tenure is an int,
    charges floats, and the multi-valued attributes (with their "No internet service" and "No
    phone service" levels kept) are pandas categories.

    Returns:
        The features and the label `churn` (1 = the customer left), on the same index.
    """
    frame = pd.read_csv(Path(folder) / FILE_NAME, dtype={"customerID": str})
    frame = frame.set_index("customerID")
    text = frame["TotalCharges"].astype(str).str.strip()
    total = pd.to_numeric(text, errors="coerce")
    blank = total.isna() & text.eq("")
    frame["TotalCharges"] = total.mask(blank & frame["tenure"].eq(0), 0.0)
    for column in YES_NO_COLUMNS:
        frame[column] = frame[column].map({"Yes": 1, "No": 0}).astype("int64")
    for column in CATEGORY_COLUMNS:
        frame[column] = frame[column].astype("category")
    label = frame.pop("Churn").map({"Yes": 1, "No": 0}).astype("int64").rename("churn")
    return frame, label


def _text(raw: RawTable, column: str) -> pd.Series:
    return raw.frame[column].astype("string").fillna("").str.strip().astype(object)


def _calendar(customers: RawTable, as_of: pd.Timestamp) -> pd.DataFrame:
    """Per customer: months paid, the last paid month and the first (as period ordinals)."""
    tenure = pd.to_numeric(_text(customers, "tenure"), errors="coerce")
    churned = _text(customers, "Churn").eq("Yes")
    last_ended = (as_of.to_period("M") - 1).ordinal
    last_paid = last_ended - churned.astype(int)
    paid = tenure.fillna(0).clip(lower=0).astype(int)
    first = last_paid - paid + 1
    # Tenure 0: joined in as_of's month, nothing billed yet.
    start = np.where(paid > 0, first, as_of.to_period("M").ordinal)
    created = pd.PeriodIndex.from_ordinals(start, freq="M").to_timestamp()
    created_text = pd.Series(created.strftime("%Y-%m-%d"), index=tenure.index, dtype=object)
    # An unreadable tenure cannot be placed in time: left empty, validate names the line.
    created_text = created_text.where(tenure.notna(), "")
    return pd.DataFrame({"paid": paid, "first": first, "created_at": created_text})


def _reps(customers: RawTable, calendar: pd.DataFrame) -> RawTable:
    earliest = calendar.loc[calendar["created_at"] != "", "created_at"].min()
    frame = pd.DataFrame(
        {
            "rep_id": [REP_ID],
            "name": ["Telco placeholder rep"],
            "manager_id": [""],
            "role": ["rep"],
            "team": [TEAM],
            "region": [REGION],
            "hired_at": [earliest],
        }
    )
    return RawTable("reps", frame, f"{customers.source} (placeholder rep)", None)


def _accounts(customers: RawTable, calendar: pd.DataFrame) -> RawTable:
    frame = pd.DataFrame(
        {
            "account_id": _text(customers, "customerID"),
            "industry": INDUSTRY,
            "region": REGION,
            "segment": SEGMENT,
            "owner_rep_id": REP_ID,
            "created_at": calendar["created_at"],
        }
    )
    return RawTable("accounts", frame, customers.source, customers.lines)


def _service_flags(customers: RawTable) -> pd.DataFrame:
    """1.0 where the customer has the service, per product id."""
    internet = _text(customers, "InternetService")
    flags = {
        "phone": _text(customers, "PhoneService").eq("Yes"),
        "internet_dsl": internet.eq("DSL"),
        "internet_fiber_optic": internet.eq("Fiber optic"),
    }
    flags |= {pid: _text(customers, col).eq("Yes") for pid, col in ADD_ON_COLUMNS.items()}
    return pd.DataFrame(flags)[list(SERVICES)].astype(float)


def _products(customers: RawTable) -> RawTable:
    """The services, with yearly list prices fitted to the monthly bills."""
    flags = _service_flags(customers)
    monthly = pd.to_numeric(_text(customers, "MonthlyCharges"), errors="coerce")
    ok = monthly.notna().to_numpy()
    prices, *_ = np.linalg.lstsq(flags.to_numpy()[ok], monthly.to_numpy()[ok], rcond=None)
    yearly = np.round(np.clip(prices, 0, None) * 12, 2)
    frame = pd.DataFrame(
        {
            "product_id": list(SERVICES),
            "name": [name for name, _ in SERVICES.values()],
            "family": [family for _, family in SERVICES.values()],
            "list_price": [f"{p:.2f}" for p in yearly],
            "billing": "subscription",
        }
    )
    return RawTable("products", frame, f"{customers.source} (services)", None)


def _main_product(customers: RawTable) -> np.ndarray:
    internet = _text(customers, "InternetService")
    return np.select(
        [internet.eq("DSL"), internet.eq("Fiber optic")],
        ["internet_dsl", "internet_fiber_optic"],
        "phone",
    )


def _revenue(customers: RawTable, calendar: pd.DataFrame) -> RawTable:
    """One recurring row per paid month, with the end of the contract term running then."""
    paid = calendar["paid"].to_numpy()
    who = np.repeat(np.arange(len(paid)), paid)
    # Month number within the customer's tenure: 0, 1, ... paid-1.
    offset = np.arange(len(who)) - np.repeat(np.cumsum(paid) - paid, paid)
    first = calendar["first"].to_numpy()[who]
    month = first + offset
    term = _text(customers, "Contract").map(CONTRACT_MONTHS).to_numpy()[who]
    known = ~pd.isna(term)
    term = np.where(known, term, 1).astype(int)
    term_end = first + (offset // term + 1) * term - 1
    ends = pd.PeriodIndex.from_ordinals(term_end, freq="M").to_timestamp(how="end")
    contract_end = np.where(known, ends.strftime("%Y-%m-%d"), "")
    lines = customers.lines if customers.lines is not None else np.arange(1, len(paid) + 1)
    frame = pd.DataFrame(
        {
            "account_id": _text(customers, "customerID").to_numpy()[who],
            "product_id": _main_product(customers)[who],
            "period": pd.PeriodIndex.from_ordinals(month, freq="M").strftime("%Y-%m"),
            "kind": "recurring",
            "amount": _text(customers, "MonthlyCharges").to_numpy()[who],
            "contract_end": contract_end,
        }
    )
    return RawTable("revenue", frame, customers.source, np.asarray(lines)[who])
