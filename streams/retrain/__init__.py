"""The retraining loop: policy (pure), triggers (a protocol; webhook and command) and the
coordinator."""

from driftline.streams.retrain.policy import Decision, PolicyConfig, RetrainPolicy
from driftline.streams.retrain.service import RetrainService, request_of
from driftline.streams.retrain.triggers import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    CommandTrigger,
    Trigger,
    TriggerResult,
    WebhookTrigger,
    sign,
    verify,
)

__all__ = ["IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "CommandTrigger", "Decision",
           "PolicyConfig", "RetrainPolicy", "RetrainService", "Trigger", "TriggerResult",
           "WebhookTrigger", "request_of", "sign", "verify"]
