"""The PagerDuty API token's secret: created empty for the operator to fill, or an existing one by ARN."""

from __future__ import annotations

from modules.cdk import Construct, SecretsmanagerSecret
from modules.settings import Settings


class PagerDutyToken(Construct):
    """No secret version is created here: the token must never pass through code or Terraform state.
    Set it once with `aws secretsmanager put-secret-value` (see README)."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, kms_key_arn: str) -> None:
        super().__init__(scope, id_)
        if settings.pagerduty.token_secret_arn:
            self.secret_arn: str = settings.pagerduty.token_secret_arn
            return
        # A deleted secret keeps its name for the recovery window, so a fixed name would stop the environment
        # being rebuilt within it: the name gets a unique suffix (the functions receive the ARN).
        secret = SecretsmanagerSecret(
            self, "secret", name_prefix=f"{settings.name_prefix}/pagerduty-api-token-", kms_key_id=kms_key_arn,
            recovery_window_in_days=settings.pagerduty.token_recovery_window_days,
            description='PagerDuty REST API token (plain string or {"token": "..."}), set by the operator')
        self.secret_arn = secret.arn
