"""The one error a refused request gets: HTTP 400 with one line naming the problem and the fix."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class RequestError(MlflowException):
    """A request the model cannot answer as sent. mlflow's scoring server answers an
    ``MlflowException`` raised by ``predict`` with the HTTP status of its error code
    (``INVALID_PARAMETER_VALUE``: 400) and ``{"error_code", "message"}``; any other exception
    becomes a generic 400 whose message does not say what was wrong."""

    def __init__(self, line: str) -> None:
        self._line = line
        super().__init__(line, error_code=INVALID_PARAMETER_VALUE)

    # The scoring server rewrites the message of an MlflowException from predict to
    # "Failed to predict data '<the whole request>'. \nError: <message>" (`invocations` in
    # mlflow/pyfunc/scoring_server): with a base64 image that echoes megabytes back and buries
    # the line the client needs at the end. The client has its request; it needs the line.
    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass
