"""Where managers already are: weekly digests and risk alerts in Slack and Microsoft Teams.

`digest` and `alerts` turn what the API answers (the quarter's forecast, deal and account
scores, coaching) into `Message`s, each limited to one node of the org tree; `render` writes
a message as Slack Block Kit, a Teams Adaptive Card or plain text; `outbox` keeps the webhooks
and records every send before it is made (each message goes out at most once); `deliver`
posts with retries. `forecast notify` (service/cli_notify.py) is the command.
"""
