"""Shared by verl-ext's registered v1 trainer modes."""


class ReportsSyncMode:
    """verl checks ``trainer_mode == "sync"`` for its replay buffer and refill rules, so a trainer registered under
    another name (``re2_sync``, ``elastic_sync``, ...) reports ``sync``; the name it was selected by is kept."""

    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.selected_mode = value
