-- POST pre-generated JSON bodies, cycling through them in order.
--   wrk -t1 -c64 -d15s --latency -s post_bodies.lua URL -- BODIES_FILE
-- BODIES_FILE holds one JSON body per line (loadtests/benchmarks/bench.py writes it). The requests are
-- formatted once in init(), so per request wrk only picks the next one.
-- done() prints one machine-readable line, "BENCH_JSON {...}", with wrk's exact counters
-- and latency percentiles in microseconds (the text report above it rounds them).

local requests = {}
local next_index = 1

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s post_bodies.lua URL -- BODIES_FILE")
  end
  local file = assert(io.open(path, "r"))
  local headers = { ["Content-Type"] = "application/json" }
  for line in file:lines() do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  file:close()
  if #requests == 0 then
    error("no request bodies in " .. path)
  end
end

function request()
  local req = requests[next_index]
  next_index = next_index % #requests + 1
  return req
end

function done(summary, latency, requests_stats)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p75": %d, "p90": %d, "p99": %d, ' ..
    '"p99.9": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
