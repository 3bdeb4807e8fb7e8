"""Codec helpers shared by several protocols (sans-I/O, bytes in, values out).

``flv`` is the FLV tag format (RTMP and HTTP-FLV payloads, Enhanced RTMP) and its mapping to hub
units; ``avc`` (Annex B / length-prefixed NALUs, SPS, decoder configuration records), ``aac``
(AudioSpecificConfig) and ``vp8`` (keyframes) are used by RTMP, HLS and WebRTC alike.
"""
