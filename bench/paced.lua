-- wrk pacing: each connection waits between requests so that the whole run sends a
-- fixed rate (connections x 1000 / delay_ms per second) instead of saturating.
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "2")

function delay()
  return delay_ms
end
