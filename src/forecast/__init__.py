"""forecast: calibrated sales forecasting and coaching from CRM history."""

__version__ = "0.1.0"
