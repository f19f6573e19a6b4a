-- wrk script for the benchmarks.
--   BENCH_DELAY_MS: each connection waits this long between requests (a paced rate
--                   of connections x 1000 / delay per second instead of saturation).
--   BENCH_TOKENS:   a file of tokens, one per line, sent in turn as
--                   `authorization: Bearer <token>`.
-- Every request carries `x-api-key: bench-key` (the ratelimit rows count by it).
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
local tokens = {}
local path = os.getenv("BENCH_TOKENS")
if path and path ~= "" then
  for line in io.lines(path) do
    if line ~= "" then tokens[#tokens + 1] = line end
  end
end
local next_token = 0

if delay_ms then
  function delay()
    return delay_ms
  end
end

function request()
  if #tokens == 0 then
    return wrk.format(nil, nil, { ["x-api-key"] = "bench-key" })
  end
  next_token = next_token % #tokens + 1
  return wrk.format(nil, nil, { ["authorization"] = "Bearer " .. tokens[next_token], ["x-api-key"] = "bench-key" })
end
