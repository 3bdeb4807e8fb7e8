"""HTTP-FLV: hub readers served by the media HTTP server (`/flv/{room}.flv`)."""
