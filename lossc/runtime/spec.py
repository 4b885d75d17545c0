"""The signature records of a compiled model, as the runtime uses them. They are made by
the front end and defined with the IR (lossc/ir/spec.py); imported here so that the
runtime names them where it always has."""
from lossc.ir.spec import HyperSpec, InputSpec, OutputSpec, ParamSpec, Signature

__all__ = ["HyperSpec", "InputSpec", "OutputSpec", "ParamSpec", "Signature"]
