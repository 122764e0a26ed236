"""`gtasr-stream preview`: a camera, file, URL or lavfi graph upscaled live, shown in a browser page.

source.py   open SOURCE, capture it on a thread (EAGAIN retried, timestamps rebased, files looped)
slot.py     the latest-frame hand-off between threads: frames are dropped, latency never builds
upscale.py  the model stage: newest frame -> GTASR 4x and bicubic 4x
jpeg.py     the frames viewers see and their JPEGs
server.py   the HTTP endpoints (standard library); page.py the page
stats.py    fps, latency and frame counters (/stats)
record.py   --record: the upscaled frames into a video file
session.py  one run: checks in order, threads, clean stop
"""
