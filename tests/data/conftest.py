"""A tiny valid CRM export, hand-written: the starting point every bad-input case corrupts.

Every table has a few rows and the rows agree with each other (keys, references, times, stages).
One deal_history note spans two lines, so line numbers after it are checked too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

AS_OF = pd.Timestamp("2024-06-30")  # test_bad_inputs.AS_OF repeats it

VALID_WORLD: dict[str, str] = {
    "reps": """\
rep_id,name,manager_id,role,team,region,hired_at,left_at
E1,Eve Exec,,executive,Leadership,Global,2019-01-01,
M1,Mia Manager,E1,manager,East,North America,2020-01-01,
R1,Raj Rep,M1,rep,East,North America,2021-03-01,
R2,Rita Rep,M1,rep,East,North America,2021-06-01,2024-05-31
""",
    "targets": """\
level,owner,period,amount
rep,R1,2024Q2,100000
team,East,2024Q2,250000
region,North America,2024Q2,300000
company,company,2024Q2,500000
""",
    "accounts": """\
account_id,name,industry,region,segment,employees,owner_rep_id,created_at
A1,Acme,Manufacturing,North America,enterprise,5000,R1,2022-01-10T09:00:00Z
A2,Beta,Software,North America,smb,40,R2,2023-02-01 12:30:00
A3,Gamma,Retail,North America,mid_market,,,2023-05-05
""",
    "products": """\
product_id,name,family,list_price,billing
P1,Core,Platform,12000,subscription
P2,Setup,Services,3000,one_time
""",
    "deals": """\
deal_id,account_id,rep_id,product_id,created_at,amount,expected_close,stage,closed_at,outcome,discount
D1,A1,R1,P1,2024-01-05T10:00:00Z,12000,2024-03-31,closed_won,2024-03-20T15:00:00Z,won,0.1
D2,A2,R2,P2,2024-02-01T09:00:00Z,3000,2024-04-30,closed_lost,2024-04-15T11:00:00Z,lost,
D3,A1,R1,P2,2024-04-01T08:00:00Z,2500,2024-07-31,proposal,,open,0
D4,,R1,P1,2024-05-10T08:00:00Z,9000,,prospecting,,open,
""",
    "deal_history": """\
deal_id,changed_at,stage,amount,expected_close,next_step
D1,2024-01-05T10:00:00Z,prospecting,10000,2024-03-31,Intro call
D1,2024-02-10T10:00:00Z,proposal,12000,2024-03-31,"Send proposal, then follow up"
D1,2024-03-20T15:00:00Z,closed_won,12000,2024-03-31,
D2,2024-02-01T09:00:00Z,qualification,3000,2024-04-30,
D2,2024-04-15T11:00:00Z,closed_lost,3000,2024-04-30,"Lost to a competitor:
price"
D3,2024-04-01T08:00:00Z,prospecting,2500,2024-07-31,
D3,2024-05-01T08:00:00Z,proposal,2500,2024-07-31,Demo done
""",
    "activities": """\
activity_id,deal_id,account_id,rep_id,kind,at
T1,D1,A1,R1,call,2024-01-06T10:00:00Z
T2,D1,,R1,demo,2024-02-01T10:00:00Z
T3,,A2,R2,email,2024-03-01T10:00:00Z
T4,D3,A1,R1,meeting,2024-04-10T10:00:00Z
""",
    "revenue": """\
account_id,product_id,period,kind,amount,contract_end
A1,P1,2024-04,recurring,1000,2025-03-31
A1,P1,2024-05,recurring,1000,2025-03-31
A1,P1,2024-06,recurring,1000,2025-03-31
A2,P2,2024-05,one_time,3000,
""",
    "signals": """\
signal_id,account_id,at,kind,value
S1,A1,2024-05-01T00:00:00Z,satisfaction,8
S2,A2,2024-05-02T00:00:00Z,support_ticket,2
S3,A1,2024-06-01T00:00:00Z,usage,0.75
""",
}


def write_world(folder: Path, world: dict[str, str] | None = None) -> Path:
    """Write the valid world (or `world`) as `<table>.csv` files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (world or VALID_WORLD).items():
        (folder / f"{name}.csv").write_text(text, encoding="utf-8", newline="")
    return folder


@pytest.fixture
def valid_folder(tmp_path: Path) -> Path:
    """A folder holding the valid world as CSV files."""
    return write_world(tmp_path / "export")
