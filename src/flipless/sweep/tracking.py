"""MLflow logging of a sweep: one parent run, and one child run per finished point.

Only the parent process logs (no concurrent writers), from the records as they are
appended: the child run of a point (name: its point id; tags ``mlflow.parentRunId`` and
``flipless.point_id``) holds the point's identity and config as params, every metric of
every split as ``<split>/<metric>`` at step 0, and the test comparison as an artifact
(:meth:`~flipless.tracking.MlflowTracker.log_comparison`). The parent run (name: the
``[tracking]`` run_name, or ``sweep <folder>``) holds the base config; its id is kept in the
sweep's sidecar, so a resumed sweep adds its children to the same parent, and first logs the
records that have no child run yet (a sweep killed between appending a record and logging
it). The parent ends FINISHED when every point has a record, FAILED when points failed,
KILLED when interrupted. Uses :class:`flipless.tracking.MlflowTracker`; needs the
``flipless[mlflow]`` extra.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flipless.errors import MissingExtraError
from flipless.metrics.comparison import Comparison
from flipless.sweep.workspace import update_sidecar
from flipless.train.config import TrackingConfig

CHILD_TAG = "flipless.point_id"
PARENT_TAG = "mlflow.parentRunId"


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise MissingExtraError(
            f"sweep tracking needs mlflow ({error}); install it with: pip install 'flipless[mlflow]'."
        ) from error
    from flipless.tracking import file_store_allowed

    with file_store_allowed(uri):
        return MlflowClient(tracking_uri=uri)


class SweepTracking:
    """The parent run of a sweep and its children (see the module docstring)."""

    def __init__(
        self,
        tracking: TrackingConfig,
        folder: Path,
        base_settings: dict[str, Any],
        sidecar: dict[str, Any],
    ) -> None:
        from flipless.tracking import MlflowTracker, resolve_tracking_uri

        self.folder = folder
        self.experiment = tracking.experiment
        self.uri = resolve_tracking_uri(tracking.mlflow)
        self._parent: MlflowTracker | None = None
        known = sidecar.get("mlflow") or {}
        parent_id = known.get("parent_run_id") if known.get("tracking_uri") == self.uri else None
        self._client = _client(self.uri)
        if parent_id is not None and not self._exists(parent_id):
            parent_id = None
        if parent_id is None:
            self._parent = MlflowTracker(
                self.uri,
                self.experiment,
                tracking.run_name or f"sweep {folder.name}",
                tags={"flipless.sweep": str(folder)},
            )
            self._parent.log_params(base_settings)
            parent_id = self._parent.run_id
            update_sidecar(
                folder,
                mlflow={
                    "tracking_uri": self.uri,
                    "experiment": self.experiment,
                    "parent_run_id": parent_id,
                },
            )
        self.parent_run_id: str = parent_id
        self.logged = self._children()

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def _children(self) -> set[str]:
        """The point ids that already have a child run under the parent."""
        experiment = self._client.get_run(self.parent_run_id).info.experiment_id
        found: set[str] = set()
        token = None
        while True:
            page = self._client.search_runs(
                [experiment],
                filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                max_results=1000,
                page_token=token,
            )
            found.update(run.data.tags.get(CHILD_TAG, "") for run in page)
            token = page.token
            if not token:
                return found - {""}

    def log(self, record: dict[str, Any]) -> None:
        """Log a finished point as a child run, unless it already has one."""
        from flipless.tracking import MlflowTracker

        point_id = record["point_id"]
        if point_id in self.logged:
            return
        tags = {PARENT_TAG: self.parent_run_id, CHILD_TAG: point_id}
        with MlflowTracker(self.uri, self.experiment, point_id, tags=tags) as child:
            child.log_params(
                {
                    **{key: record[key] for key in ("method", "kind", "strength_name", "seed")},
                    "strength": record["strength"],
                    "config": record["config"],
                }
            )
            child.log_metrics(
                {
                    f"{split}/{name}": math.nan if value is None else value
                    for split, values in record["metrics"].items()
                    for name, value in values.items()
                },
                step=0,
            )
            comparison = Comparison.from_json(str(self.folder / record["comparison_path"]))
            child.log_comparison(comparison, "test_comparison")
        self.logged.add(point_id)

    def finish(self, status: str) -> None:
        """End the parent run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self._parent is not None:
            self._parent.close(status)
        else:
            self._client.set_terminated(self.parent_run_id, status)
