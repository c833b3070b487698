"""The jobs that find out what WeChat never tells: expiry, missing notifications, refunds, bills, certificates."""
