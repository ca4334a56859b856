-- The store's clock, in ms since the epoch: the live stream's watermark
-- (collector/api.py). Rows stamp InsertedAt from this clock when their insert starts.
SELECT toUnixTimestamp64Milli(now64(3)) AS now_ms
