"""The publisher's clock in the picture: how far a player is behind live, glass to glass.

ffmpeg (as OBS would push) burns its wall clock into each picture when it makes it: BITS boxes in
the top left corner, white for a 1 bit, of the centiseconds since T0. A page reads them back from
every frame it presents (requestVideoFrameCallback, a canvas: `READ_CLOCK`), so the figure covers
encoding, the transport, the server, the player's buffer and decoding. Page and publisher share
this machine's clock (Date.now() and time.time())."""
from __future__ import annotations

import subprocess

from .procs import require_tool

BITS = 20  # centiseconds: 2^20 cs is 2.9 hours, far more than a test runs
BOX = 16


def clock_publisher(url: str, t0_us: int, *more_urls: str) -> subprocess.Popen:
    """testsrc2 at 30 fps with its wall clock (s since T0, to 10 ms) burned in; 1 s GOP, as LL-HLS
    needs (segments start on keyframes); AAC sine. The pictures' own timestamps stay regular. With
    `more_urls`, the same encoded stream goes to every URL (ffmpeg's tee muxer)."""
    chain = [f"testsrc2=size=640x360:rate=30,settb=expr=1/1000,setpts='(RTCTIME-{t0_us})/(TB*1000000)'",
             f"drawbox=x=0:y=0:w={BOX * (BITS + 1)}:h={BOX + 8}:color=black:t=fill"]
    chain += [f"drawbox=x={BOX // 2 + BOX * k}:y=4:w={BOX}:h={BOX}:color=white:t=fill:"
              f"enable='mod(floor(t*100/pow(2\\,{k}))\\,2)'" for k in range(BITS)]
    chain.append("settb=expr=1/30,setpts=N")  # back to one frame a tick: the clock is only in the picture
    return subprocess.Popen(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", ",".join(chain),
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-keyint_min", "30",
         "-b:v", "1000k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", *_outputs(url, *more_urls)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# Runs in the page: for every presented frame, the publisher's clock read from its pixels and how far
# the page's clock is past it (the same machine's clock: Date.now() and Python's time.time()).
READ_CLOCK = """
const t0 = arguments[0], bits = arguments[1], box = arguments[2];
const video = document.getElementById("video");
const canvas = document.createElement("canvas");
canvas.width = 640; canvas.height = 360;
const g = canvas.getContext("2d", { willReadFrequently: true });
window.__behind = [];
function frame() {
  g.drawImage(video, 0, 0, 640, 360);
  const row = g.getImageData(0, 4 + box / 2, box * (bits + 1), 1).data;
  let cs = 0;
  for (let k = 0; k < bits; k++) if (row[(box + box * k) * 4] > 128) cs += 2 ** k;
  window.__behind.push([performance.now(), (Date.now() - t0) / 1000 - cs / 100]);
  video.requestVideoFrameCallback(frame);
}
video.requestVideoFrameCallback(frame);
"""


def _outputs(*urls: str) -> list[str]:
    if len(urls) == 1:
        return ["-f", "flv", urls[0]]
    # The tee muxer has no global header of its own: ask the encoders for one (FLV's sequence headers).
    return ["-map", "0:v", "-map", "1:a", "-flags", "+global_header", "-f", "tee",
            "|".join(f"[f=flv:onfail=ignore]{url}" for url in urls)]
