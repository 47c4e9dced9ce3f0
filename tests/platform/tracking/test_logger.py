"""The background logger: in order, retried with backoff, permanent errors dropped."""

from __future__ import annotations

from leoclr_platform import tracking as T


def test_logger_delivers_in_order_and_retries_with_backoff():
    calls, attempts = [], {"n": 0}

    def flaky():
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError("server down")
        calls.append("flaky")

    logger = T.AsyncLogger(max_backoff=0.2, warn=lambda msg: None)
    logger.submit(flaky, "flaky")
    logger.submit(lambda: calls.append("next"), "next")  # must not overtake the failing call
    assert logger.flush(timeout=10)
    assert calls == ["flaky", "next"] and attempts["n"] == 3 and logger.failures == 2


def test_logger_drops_permanent_errors_and_reports_what_it_could_not_deliver():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    warnings = []
    logger = T.AsyncLogger(max_backoff=0.2, warn=warnings.append)

    def bad_value():
        raise MlflowException("param changed", error_code=INVALID_PARAMETER_VALUE)

    logger.submit(bad_value, "bad param")
    assert logger.flush(timeout=10) and logger.dropped == ["bad param"]
    assert any("bad param" in w and "not retried" in w for w in warnings)

    def never():
        raise ConnectionError("still down")

    logger.submit(never, "epoch 3")
    assert logger.close(timeout=1.0) is False  # the store never came back: the caller says `leoclr sync`
    assert logger.pending == 1
