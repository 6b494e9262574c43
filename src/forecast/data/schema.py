"""The data contract: the canonical CRM tables, defined once. Every source is mapped onto them
and checked by `forecast.data.validate` before anything is stored; `docs/data-contract.md` is
rendered from them (`forecast.data.contract_doc`), so the text and the checks cannot drift apart.
"""

from __future__ import annotations

from forecast.data.contract import (
    ACTIVITY_KINDS,
    BILLING,
    HISTORY_ORIGINS,
    KNOWN_AT,
    OUTCOMES,
    REVENUE_KINDS,
    ROLES,
    SEGMENTS,
    SIGNAL_KINDS,
    STAGES,
    TARGET_LEVELS,
    Column,
    Table,
)

REPS = Table(
    name="reps",
    description="Sellers and their managers; `manager_id` builds the org tree.",
    columns=(
        Column("rep_id", "id", "Unique id of the person."),
        Column("name", "text", "Display name.", required=False, nullable=True),
        Column(
            "manager_id",
            "id",
            "The person's manager; empty only at the top of the tree (or when the export "
            "has no org tree).",
            required=False,
            nullable=True,
            references="reps.rep_id",
        ),
        Column("role", "enum", "Place in the organisation.", allowed=ROLES),
        Column("team", "text", "Team name (a rep belongs to exactly one)."),
        Column("region", "text", "Region name; teams roll up into regions."),
        Column("hired_at", "date", "First day in the job."),
        Column("left_at", "date", "Last day, if the person left.", required=False, nullable=True),
    ),
    key=("rep_id",),
    known_at="hired_at",
    time_note="A rep exists from `hired_at`; the org tree is taken as of the export.",
    extra_checks=("manager chain has no cycles", "left_at >= hired_at"),
)

TARGETS = Table(
    name="targets",
    description="Quotas: an amount per owner and quarter.",
    columns=(
        Column("level", "enum", "What kind of owner the quota belongs to.", allowed=TARGET_LEVELS),
        Column(
            "owner",
            "text",
            "rep_id for level rep, team or region name, or `company`.",
        ),
        Column("period", "quarter", "Calendar quarter of the quota."),
        Column("amount", "float", "Quota amount in the reporting currency.", minimum=0),
    ),
    key=("level", "owner", "period"),
    time_note="Quotas are set before their quarter starts and are read as known all along.",
    extra_checks=("owner resolves: a rep_id, a team or region present in reps, or `company`",),
)

ACCOUNTS = Table(
    name="accounts",
    description="Customers and prospects.",
    columns=(
        Column("account_id", "id", "Unique id of the account."),
        Column("name", "text", "Display name.", required=False, nullable=True),
        Column("industry", "text", "Industry or sector.", required=False, nullable=True),
        Column(
            "region", "text", "Region the account is served from.", required=False, nullable=True
        ),
        Column("segment", "enum", "Size segment.", required=False, nullable=True, allowed=SEGMENTS),
        Column(
            "employees", "int", "Head count, if known.", required=False, nullable=True, minimum=0
        ),
        Column(
            "owner_rep_id",
            "id",
            "The rep who owns the relationship.",
            required=False,
            nullable=True,
            references="reps.rep_id",
        ),
        Column("created_at", "datetime", "When the account was entered in the CRM."),
    ),
    key=("account_id",),
    known_at="created_at",
)

PRODUCTS = Table(
    name="products",
    description="Products and plans.",
    columns=(
        Column("product_id", "id", "Unique id of the product."),
        Column("name", "text", "Display name.", required=False, nullable=True),
        Column("family", "text", "Product family or series."),
        Column(
            "list_price", "float", "List price per deal (per year for subscriptions).", minimum=0
        ),
        Column("billing", "enum", "How it is billed.", allowed=BILLING),
    ),
    key=("product_id",),
    time_note="Treated as known all along.",
)

DEALS = Table(
    name="deals",
    description="Opportunities, in their state at the export's as-of. Features never read this "
    "state directly: they rebuild it from deal_history as of each snapshot.",
    columns=(
        Column("deal_id", "id", "Unique id of the opportunity."),
        Column(
            "account_id",
            "id",
            "The customer; may be empty for early prospects.",
            required=False,
            nullable=True,
            references="accounts.account_id",
        ),
        Column(
            "rep_id",
            "id",
            "The rep who owns the deal; may be empty (rep features are then off for it).",
            required=False,
            nullable=True,
            references="reps.rep_id",
        ),
        Column(
            "product_id",
            "id",
            "Main product; may be empty.",
            required=False,
            nullable=True,
            references="products.product_id",
        ),
        Column("created_at", "datetime", "When the deal was opened."),
        Column(
            "amount",
            "float",
            "Current amount; may be empty while open or when lost, never when won.",
            required=False,
            nullable=True,
            minimum=0,
        ),
        Column(
            "expected_close",
            "date",
            "Current expected close date.",
            required=False,
            nullable=True,
        ),
        Column("stage", "enum", "Current stage.", allowed=STAGES),
        Column(
            "closed_at", "datetime", "When it was won or lost; empty while open.", nullable=True
        ),
        Column("outcome", "enum", "won, lost or open.", allowed=OUTCOMES),
        Column(
            "discount",
            "float",
            "Discount off list price, 0 to 1.",
            required=False,
            nullable=True,
            minimum=0,
            maximum=1,
        ),
    ),
    key=("deal_id",),
    known_at="created_at",
    time_note="created_at <= closed_at <= as-of. The row is the final (export-time) state, so "
    "only deal_history may feed point-in-time features.",
    extra_checks=(
        "closed_at >= created_at",
        "outcome open <=> closed_at empty <=> stage not closed",
        "outcome won <=> stage closed_won; lost <=> closed_lost",
        "won deals have an amount",
    ),
)

DEAL_HISTORY = Table(
    name="deal_history",
    description="Every recorded change of a deal: one row per change, with the state after it.",
    columns=(
        Column("deal_id", "id", "The deal that changed.", references="deals.deal_id"),
        Column("changed_at", "datetime", "When the change was recorded."),
        Column("stage", "enum", "Stage after the change.", allowed=STAGES),
        Column("amount", "float", "Amount after the change.", nullable=True, minimum=0),
        Column("expected_close", "date", "Expected close date after the change.", nullable=True),
        Column(
            "next_step",
            "text",
            "Next step recorded by the rep, if any.",
            required=False,
            nullable=True,
        ),
        Column(
            "origin",
            "enum",
            "`recorded` (from the CRM's history; empty means recorded) or `derived` (written on "
            "import from a deals-only export: a creation row, then the closing row).",
            required=False,
            nullable=True,
            allowed=HISTORY_ORIGINS,
        ),
    ),
    key=("deal_id", "changed_at"),
    known_at="changed_at",
    time_note="A deal's state at time t is its last history row with changed_at <= t. An import "
    "without deal_history derives it from deals (origin `derived`): stage-history features are "
    "then off.",
    extra_checks=(
        "created_at <= changed_at (<= closed_at for closed deals)",
        "the latest row matches the deal's current stage",
    ),
)

DEAL_ATTRIBUTES = Table(
    name="deal_attributes",
    description="What an export says about a deal beyond the contract (lead source, campaign, "
    "deal type, custom fields), one row per deal and attribute, with when it becomes known.",
    columns=(
        Column("deal_id", "id", "The deal described.", references="deals.deal_id"),
        Column("name", "id", "The attribute, e.g. lead_source."),
        Column("value", "text", "Its value, as text.", nullable=True),
        Column(
            "known_at",
            "enum",
            "`created`: known when the deal is created (it may become a feature); `closed`: "
            "filled at or after the close (never a feature).",
            allowed=KNOWN_AT,
        ),
    ),
    key=("deal_id", "name"),
    time_note="A `created` attribute is read as known from the deal's creation on; the leak "
    "guard checks that claim before any model is fitted. `closed` attributes are kept, never "
    "read by a feature.",
)

ACTIVITIES = Table(
    name="activities",
    description="Touches: calls, emails, meetings, demos, proposals sent.",
    columns=(
        Column("activity_id", "id", "Unique id of the touch."),
        Column(
            "deal_id",
            "id",
            "The deal it served, if any.",
            nullable=True,
            references="deals.deal_id",
        ),
        Column(
            "account_id",
            "id",
            "The account it served, if any.",
            nullable=True,
            references="accounts.account_id",
        ),
        Column("rep_id", "id", "Who made the touch.", references="reps.rep_id"),
        Column("kind", "enum", "Kind of touch.", allowed=ACTIVITY_KINDS),
        Column("at", "datetime", "When it happened."),
    ),
    key=("activity_id",),
    known_at="at",
    extra_checks=("deal_id or account_id is set",),
)

REVENUE = Table(
    name="revenue",
    description="Booked revenue per account and month; recurring rows carry the contract end.",
    columns=(
        Column("account_id", "id", "The paying account.", references="accounts.account_id"),
        Column(
            "product_id",
            "id",
            "The product billed.",
            references="products.product_id",
        ),
        Column("period", "month", "Month billed."),
        Column("kind", "enum", "Recurring (subscription) or one-time.", allowed=REVENUE_KINDS),
        Column("amount", "float", "Amount billed in the month.", minimum=0),
        Column(
            "contract_end",
            "date",
            "End of the current subscription term (recurring rows).",
            required=False,
            nullable=True,
        ),
    ),
    key=("account_id", "product_id", "period", "kind"),
    known_at="period",
    time_note="A month's revenue is known once the month has ended.",
)

SIGNALS = Table(
    name="signals",
    description="Other evidence about an account: support tickets, satisfaction scores, usage, "
    "late payments.",
    columns=(
        Column("signal_id", "id", "Unique id of the observation."),
        Column("account_id", "id", "The account observed.", references="accounts.account_id"),
        Column("at", "datetime", "When it was observed."),
        Column("kind", "enum", "What was observed.", allowed=SIGNAL_KINDS),
        Column(
            "value",
            "float",
            "support_ticket: severity 1-3; satisfaction: score 0-10; usage: active-seat share "
            "0-1; payment_delay: days late.",
        ),
    ),
    key=("signal_id",),
    known_at="at",
)

ORDERS = Table(
    name="orders",
    description="Purchases, returns and cancellations, one row per order line, for businesses "
    "that sell by the order rather than by subscription (inactivity churn reads this table).",
    columns=(
        Column("order_id", "id", "The order (invoice) the line belongs to."),
        Column(
            "account_id",
            "id",
            "The customer; a line without one counts in totals but no customer is scored on it.",
            nullable=True,
            references="accounts.account_id",
        ),
        Column("at", "datetime", "When the order (or the return) was placed."),
        Column(
            "product_id",
            "id",
            "The product on the line, if known.",
            required=False,
            nullable=True,
            references="products.product_id",
        ),
        Column(
            "quantity",
            "float",
            "Units on the line; negative for a return or cancellation.",
            required=False,
            nullable=True,
        ),
        Column(
            "unit_price",
            "float",
            "Price per unit in the reporting currency.",
            required=False,
            nullable=True,
        ),
        Column(
            "amount",
            "float",
            "Line total in the reporting currency, negative for a return; empty means quantity "
            "x unit_price.",
            required=False,
            nullable=True,
        ),
    ),
    key=(),
    known_at="at",
    time_note="A line is known from `at`. A return carries its own date, not the sale's, so "
    "a return after an as-of revises nothing known at that as-of. Lines have no key: an "
    "export may list the same line twice, and both are kept.",
    extra_checks=("amount, or both quantity and unit_price, is set",),
)

# every canonical table by name, in the order the contract lists them
TABLES: dict[str, Table] = {t.name: t for t in (REPS, TARGETS, ACCOUNTS, PRODUCTS, DEALS)} | {
    t.name: t for t in (DEAL_HISTORY, DEAL_ATTRIBUTES, ACTIVITIES, REVENUE, SIGNALS, ORDERS)
}
TABLE_NAMES: tuple[str, ...] = tuple(TABLES)
