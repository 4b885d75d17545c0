"""The element types of IR values: real numbers, 64-bit integers (indices), booleans
(comparisons). A leaf module: the op table's shape rules and the graph both use them."""
REAL, INT, BOOL = "real", "int", "bool"
# what REAL is stored as in compiled code (a model's dtype)
DTYPES = ("float64", "float32")
