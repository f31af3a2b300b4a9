"""Built-in datasets that ikd can make by itself (see :mod:`ikd_cli.data.shapes`).

Nothing is imported here on purpose: submodules are imported where they are used, so importing
this package costs nothing and never pulls in torch.
"""
