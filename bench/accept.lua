-- wrk script for bench/accept.py: send one fixed POST on every connection, count the
-- answers by status, and stop sending after a deadline without dropping what is in
-- flight. wrk itself cannot drain: when its -d expires it closes connections that are
-- still waiting, and the server may commit rows for requests nobody saw answered. So
-- accept.py runs wrk for send_seconds plus a grace period; past send_seconds delay()
-- parks every connection, whose last answer arrives during the grace.
--
-- Arguments after `--`: send_seconds, request body, Authorization header value.
-- done() prints one line, "BENCH-RESULT <json>", for accept.py to read.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]

-- os.time() only has whole seconds; the send window needs better than that.
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

-- A day: longer than any run, so a parked connection never sends again.
local PARKED_MS = 24 * 3600 * 1000

-- Per-thread counters (globals, so that done() can read them with thread:get()).
-- A connection is parked only once its last answer has arrived, so connections -
-- parked is what was still in flight when wrk stopped.
parked = 0
accepted = 0
others = {} -- status (as a string) -> count, for every answer that is not 202

local stop_at

function init(args)
  stop_at = now() + tonumber(args[1])
  wrk.method = "POST"
  wrk.body = args[2]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = args[3]
  -- No request() function: wrk then formats the request once from this table.
end

function delay()
  if now() < stop_at then
    return 0
  end
  parked = parked + 1
  return PARKED_MS
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  else
    local key = tostring(status)
    others[key] = (others[key] or 0) + 1
  end
end

-- setup() and done() share one Lua state, separate from the threads'.
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

local function json_counts(counts)
  local parts = {}
  for key, value in pairs(counts) do
    parts[#parts + 1] = string.format('"%s":%d', key, value)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local total_parked, total_accepted, total_others = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_parked = total_parked + thread:get("parked")
    total_accepted = total_accepted + thread:get("accepted")
    for key, value in pairs(thread:get("others")) do
      total_others[key] = (total_others[key] or 0) + value
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"parked":%d,"accepted":%d,"others":%s,"p50_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    total_parked, total_accepted, json_counts(total_others),
    latency:percentile(50.0), latency:percentile(99.0), latency.max,
    errors.connect, errors.read, errors.write, errors.timeout
  ))
end
