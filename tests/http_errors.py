"""The one error shape every endpoint answers with, checked in one place."""

from __future__ import annotations


def assert_error(response, status: int, type_: str, param: str | None = None, contains: str = ""):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    if param is not None:
        assert error["param"] == param
    assert contains in error["message"]
