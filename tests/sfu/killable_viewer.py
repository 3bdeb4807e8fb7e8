"""A WHEP viewer in its own process, for the test that kills one mid-call."""
import asyncio
import sys

from .clients import whep_subscribe


async def main(base: str, public_id: str) -> None:
    pc, _, collectors = await whep_subscribe(base, public_id, kinds=("video",))
    video = await asyncio.wait_for(collectors["video"], 10)
    await asyncio.wait_for(video.first, 10)
    print("receiving", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
