-- wrk script for bench/bench_serve.sh: POST /v1/intent with varied banking
-- texts, one of 48 pre-built requests per call, and a count of the statuses
-- seen (printed by done(), summed over wrk's threads).
--   wrk -s bench/wrk_intent.lua http://127.0.0.1:8080
-- Environment: FINCH_WRK_KEY, when set, is sent as "Authorization: Bearer".

local texts = {
  "my card still hasn't arrived",
  "when will my new card be delivered",
  "what exchange rate do you use for euros",
  "i was charged twice for the same purchase",
  "how do i top up with a bank transfer",
  "my top up failed, why",
  "can i get a refund for this order",
  "the atm kept my card",
  "i forgot my pin and need to reset it",
  "why was my transfer declined",
  "how long does a transfer to another bank take",
  "there is a payment i don't recognise on my statement",
  "i think someone stole my card details",
  "please freeze my card, i lost it",
  "how do i change my address",
  "can i have a virtual card for online shopping",
  "is there a fee for withdrawing cash abroad",
  "my salary has not shown up in my account",
  "the cash machine gave me the wrong amount",
  "how do i verify my identity",
  "why is my account balance not updated",
  "can i pay with apple pay",
  "how do i close my account",
  "i want to dispute a card payment",
  "what are the limits for contactless payments",
  "the exchange rate on my transaction looks wrong",
  "my card payment was declined at the shop",
  "how much does it cost to send money to the us",
  "where can i find my account number and sort code",
  "can i order a physical card in another country",
  "the merchant refunded me but i don't see the money",
  "how do i activate my new card",
  "why do i need to verify my top up",
  "a direct debit was taken twice this month",
  "i need to cancel a transfer i just made",
  "can i get a statement for the last three months",
  "is my money safe with you",
  "how do i add money with a cheque",
  "my card expires next month, what do i do",
  "what currencies can i hold in my account",
  "i was charged a fee for a card payment",
  "the app says my transfer is pending for days",
  "can my child get an account",
  "how do i set up google pay",
  "i entered the wrong pin three times and now it's blocked",
  "why was i charged extra for withdrawing cash",
  "can you tell me the exchange rate for yen",
  "i received money from a friend but it's not showing",
}

local reqs = {}
statuses = {} -- global: done() reads it from each thread

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  local key = os.getenv("FINCH_WRK_KEY")
  if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
  for i, t in ipairs(texts) do
    reqs[i] = wrk.format("POST", "/v1/intent", headers, '{"text":"' .. t .. '"}')
  end
end

local n = 0
function request()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  table.sort(parts)
  io.write(string.format("finch: statuses %s\n", table.concat(parts, " ")))
  io.write(string.format("finch: rps %.0f p50_ms %.3f p99_ms %.3f max_ms %.3f errors %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
