"""lossc's version: a leaf module, so that any module can read it without importing the
package's __init__ (which imports the API, and with it most of lossc)."""
__version__ = "0.1.0"
