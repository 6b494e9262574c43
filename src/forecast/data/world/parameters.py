"""The generated world's settings: regions, industries, products, stages, how strongly each hidden
quantity moves a deal, seasonality and names."""

from __future__ import annotations

import numpy as np

DAY_NS = 86_400 * 10**9

REGIONS = ("North America", "EMEA", "APAC", "LATAM")

REGION_WEIGHTS = np.array([0.4, 0.3, 0.2, 0.1])

INDUSTRIES = (
    "Manufacturing",
    "Healthcare",
    "Retail",
    "Finance",
    "Technology",
    "Logistics",
    "Energy",
    "Public Sector",
)

SEGMENT_WEIGHTS = np.array([0.55, 0.3, 0.15])

SEGMENT_SIZE = np.array([1.0, 2.5, 6.0])  # deal size multiplier

SEGMENT_PACE = np.array([0.7, 1.0, 1.6])  # stage duration multiplier

SEGMENT_EFFECT = np.array([0.15, 0.0, -0.25])  # bigger customers are harder to win

PRODUCTS = (
    # product_id, name, family, list_price, billing
    ("P01", "Core Platform", "Platform", 24_000.0, "subscription"),
    ("P02", "Analytics Add-on", "Platform", 9_000.0, "subscription"),
    ("P03", "Enterprise Suite", "Platform", 60_000.0, "subscription"),
    ("P04", "Support Plus", "Platform", 6_000.0, "subscription"),
    ("P05", "Edge Gateway", "Hardware", 15_000.0, "one_time"),
    ("P06", "Sensor Kit", "Hardware", 4_500.0, "one_time"),
    ("P07", "Implementation", "Services", 12_000.0, "one_time"),
    ("P08", "Training Pack", "Services", 3_000.0, "one_time"),
)

# which products each segment tends to buy
PRODUCT_MIX = np.array(
    [
        [0.22, 0.10, 0.02, 0.10, 0.12, 0.22, 0.08, 0.14],
        [0.22, 0.14, 0.08, 0.08, 0.14, 0.12, 0.12, 0.10],
        [0.14, 0.14, 0.26, 0.06, 0.12, 0.06, 0.14, 0.08],
    ]
)

# logit of advancing out of prospecting, qualification, proposal, negotiation
STAGE_LOGITS = np.array([0.85, 1.05, 0.95, 1.2])

STAGE_DAYS = np.array([12.0, 18.0, 21.0, 16.0])  # mean dwell per open stage, mid-market

ACTIVITY_RATE = np.array([0.20, 0.25, 0.30, 0.30])  # touches per day per open stage

# the deal quality mix (logit scale): what drives a win, and how much of it the CRM can see.
# Tuned so recorded behaviour reveals most of a deal's quality (docs/generated-world.md): the
# win model's out-of-time AUC comes within about 0.015 of the truth's on the default world.
ENGAGEMENT_WEIGHT = 0.35  # a buyer's engagement (sd 1): seen only through touches over time

ENGAGEMENT_TOUCHES = 1.0  # log effect of engagement on the touch rate

SKILL_SD = 0.6  # reps' skill: seen through their record

FIT_SD = 0.6  # how well each product fits each industry: seen through past deals

LOYALTY_SD = 0.15  # an account's leaning: seen only through its earlier deals

SIZE_EFFECT = -0.6  # per log of the amount against the usual size: big asks are harder

QUALITY_NOISE = 0.1  # what no recorded data can reveal

STAGE_ACTIVITY_MIX = np.array(
    # call, email, meeting, demo, proposal, other
    [
        [0.45, 0.45, 0.05, 0.00, 0.00, 0.05],
        [0.35, 0.35, 0.20, 0.05, 0.00, 0.05],
        [0.20, 0.30, 0.20, 0.15, 0.10, 0.05],
        [0.30, 0.35, 0.25, 0.00, 0.05, 0.05],
    ]
)

NEXT_STEPS = (
    "Book discovery call",
    "Confirm budget and timeline",
    "Run product demo",
    "Send proposal",
    "Review terms with procurement",
)

MONTH_SEASON = np.array([0.85, 0.95, 1.05, 0.95, 1.0, 1.05, 0.85, 0.8, 1.05, 1.1, 1.1, 0.95])

FIRST_NAMES = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jon",
    "Kemi",
    "Liam",
    "Maya",
    "Noor",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Xavi",
    "Yara",
    "Zoe",
]

LAST_NAMES = [
    "Adams",
    "Berg",
    "Costa",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Haas",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Patel",
    "Quist",
    "Rossi",
    "Silva",
    "Tanaka",
    "Ueda",
    "Varga",
    "Weber",
    "Xu",
    "Young",
    "Zhang",
]

RENEWAL_RATE_FOR_QUOTAS = 0.85
