-- Each request carries the cookie of one session picked at random from $COOKIES (one
-- "session=..." per line), to the path in $WRK_PATH. Requests are formatted once, in init,
-- so that wrk spends its time sending, not building strings.
local requests = {}

function init(args)
  local path = os.getenv("WRK_PATH") or "/counter"
  for line in io.lines(os.getenv("COOKIES")) do
    requests[#requests + 1] = wrk.format("GET", path, { ["Cookie"] = line })
  end
  math.randomseed(os.time())
end

function request()
  return requests[math.random(#requests)]
end
