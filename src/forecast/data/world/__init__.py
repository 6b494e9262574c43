"""The generated CRM world (`make_crm`): the embedded default for the demo, the tests and the
benchmarks, with the hidden quantities it was drawn from (`WorldTruth`).

Modules, in the order a world is made: `parameters`, `org` (reps and accounts), `deals` (deals,
their stage paths and activities), `subscriptions` (bills, health, renewals), `assemble` and
`money` (the contract's tables), `dirt` (untidy but valid data); `generate` runs them.
"""

from forecast.data.world.generate import CrmWorld, WorldTruth, make_crm, make_crm_parts

__all__ = ["CrmWorld", "WorldTruth", "make_crm", "make_crm_parts"]
