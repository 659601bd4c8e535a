-- wrk script: POST the body in BODY_FILE (2 KB message) to the URL given, with the request's Content-Type and
-- key header from the environment (defaults: JSON with "Authorization: Bearer $OUTPOST_KEY"). With EXPECT_STATUS,
-- done() prints how many answers had another status ("unexpected statuses: N").
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
wrk.headers[os.getenv("AUTH_HEADER") or "Authorization"] = os.getenv("AUTH_VALUE") or ("Bearer " .. os.getenv("OUTPOST_KEY"))
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()

local expected = tonumber(os.getenv("EXPECT_STATUS") or "0")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected = 0
end

function response(status, headers, body)
  if expected ~= 0 and status ~= expected then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do
    n = n + (t:get("unexpected") or 0)
  end
  io.write(string.format("unexpected statuses: %d\n", n))
end
