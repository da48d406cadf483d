"""The warehouse's error type, shared by the refresh and the readers."""


class WarehouseError(RuntimeError):
    pass
