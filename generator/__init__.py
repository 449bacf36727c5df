"""SMT: the Standard Model Template generator behind the ``smt`` command.

Data flows one way: spec (``fleet``) -> render with techniques (``render``) -> compare or write
(``sync``). The technique engine that runs inside rendering lives in ``generator.engine``.
"""

__version__ = "0.1.0"
