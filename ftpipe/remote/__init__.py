"""One translation point per remote API: its errors become ftpipe's typed errors."""
