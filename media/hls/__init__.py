"""HLS output: one PyAV (FFmpeg hls muxer) segmenter per live stream, fed by a hub reader."""
