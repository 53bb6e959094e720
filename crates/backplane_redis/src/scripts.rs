//! The Lua scripts: each runs atomically inside Redis in one round trip.
//!
//! Inside a script, `redis.call` answers in RESP2 shapes (the scripts never
//! call `redis.setresp`): flat arrays, `false` for nil.

/// Appends events to a topic's stream, trims it, and publishes each with
/// its position on the topic's channel, in order.
///
/// `KEYS[1]` the stream; `ARGV[1]` the topic's channel, `ARGV[2]` the maximum
/// length, `ARGV[3]` the maximum age in ms (`0`: none), `ARGV[4..]` the
/// events. Returns the new entries' ids, in order.
///
/// Trimming deletes the oldest entries with `XDEL`, not `XADD MAXLEN`/`XTRIM`:
/// Redis 7.0 updates a stream's `max-deleted-entry-id` (what `history` reads
/// to report gaps exactly) on `XDEL` only, never when it trims. It runs once
/// per call, after every event is added.
pub(crate) const APPEND: &str = r"
local ids = {}
for i = 4, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'data', ARGV[i])
end
local function delete(entries)
  for i = 1, #entries, 500 do
    local del = {}
    for j = i, math.min(i + 499, #entries) do del[#del + 1] = entries[j][1] end
    redis.call('XDEL', KEYS[1], unpack(del))
  end
end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  delete(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess))
end
local max_age = tonumber(ARGV[3])
if max_age > 0 then
  local cutoff = tonumber(string.match(ids[#ids], '^(%d+)')) - max_age
  if cutoff > 0 then
    delete(redis.call('XRANGE', KEYS[1], '-', '(' .. string.format('%.0f', cutoff) .. '-0'))
  end
end
for i = 4, #ARGV do
  redis.call('PUBLISH', ARGV[1], ids[i - 3] .. '\n' .. ARGV[i])
end
return ids
";

/// Keeps one message in the lists of some rooms (the last `keep` of each)
/// and publishes it on some channels, atomically.
///
/// `KEYS` the rooms' lists; `ARGV[1]` how many each list keeps, `ARGV[2]` the
/// lists' lifetime in ms after their last message (`0`: none), `ARGV[3]` the
/// message; then pairs of a channel and what to publish on it.
pub(crate) const PUBLISH_KEPT: &str = r"
local keep = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[3])
  redis.call('LTRIM', KEYS[i], -keep, -1)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
for i = 4, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
";

/// Reads a topic's stream from a position, with what the gap rule needs, in
/// one atomic step (a trim between two reads would hide a gap).
///
/// `KEYS[1]` the stream; `ARGV[1]` the first id to read (inclusive). Returns
/// `{}` when there is no stream, else `{max-deleted-entry-id, first id or '',
/// id, event, id, event, ...}`.
pub(crate) const HISTORY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local out = {'0-0', ''}
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then out[1] = info[i + 1] end
  if info[i] == 'first-entry' and info[i + 1] then out[2] = info[i + 1][1] end
end
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], '+')) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
end
return out
";

/// The current time of the Redis server in ms: every presence expiry is on
/// this one clock, whichever node wrote it.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// `{id, info, id, info, ...}` for the ids, from the presence hash `KEYS[1]`
/// (ids missing from it get `missing`, or are left out when it is nil).
const WITH_INFO: &str = r"
local function with_info(ids, missing)
  local out = {}
  for i = 1, #ids, 500 do
    local chunk = {unpack(ids, i, math.min(i + 499, #ids))}
    local infos = redis.call('HMGET', KEYS[1], unpack(chunk))
    for j = 1, #chunk do
      local info = infos[j] or missing
      if info then
        out[#out + 1] = chunk[j]
        out[#out + 1] = info
      end
    end
  end
  return out
end
";

/// Sets (or refreshes) presence entries: `KEYS[1]` the hash, `KEYS[2]` the
/// expiry set; `ARGV[1]` the TTL in ms, then client and info pairs. Both keys
/// live twice the TTL past the last write, so a room nobody refreshes goes away.
pub(crate) fn presence_set() -> String {
    format!(
        "{NOW}{}",
        r"
local ttl = tonumber(ARGV[1])
local expiry = string.format('%.0f', now + ttl)
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], expiry, ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local keep = string.format('%.0f', 2 * ttl)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return 1
"
    )
}

/// Who is present: the members of `KEYS[2]` whose expiry is still ahead, with
/// their info from `KEYS[1]`.
pub(crate) fn presence_read() -> String {
    format!(
        "{NOW}{WITH_INFO}{}",
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
return with_info(ids, nil)
"
    )
}

/// Removes the members whose expiry passed and returns them with their info
/// (`-` if the hash lost it); atomic, so each one goes to exactly one caller.
pub(crate) fn presence_expire() -> String {
    format!(
        "{NOW}{WITH_INFO}{}",
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
if #ids == 0 then return {} end
local out = with_info(ids, '-')
for i = 1, #ids, 500 do
  local chunk = {unpack(ids, i, math.min(i + 499, #ids))}
  redis.call('ZREM', KEYS[2], unpack(chunk))
  redis.call('HDEL', KEYS[1], unpack(chunk))
end
return out
"
    )
}
