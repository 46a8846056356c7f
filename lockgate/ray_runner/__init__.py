"""Running a job beyond one process: its subtasks in Ray actors (``pip install lockgate[ray]``).

Ray itself is imported only when a job starts on :class:`RayRunner`.
"""

from lockgate.ray_runner._runner import RayRunner, SubtaskLostError

__all__ = ["RayRunner", "SubtaskLostError"]
