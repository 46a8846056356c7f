"""The error an actor raises for a failure of one of its operators."""

from __future__ import annotations


class OperatorFailure(Exception):
    """An operator of a chain raised; carries the operator's uid, the cause is ``__cause__``."""

    def __init__(self, operator_uid: str) -> None:
        super().__init__(operator_uid)
        self.operator_uid = operator_uid
