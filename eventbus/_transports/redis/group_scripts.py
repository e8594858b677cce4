"""The Lua scripts of durable groups on Redis Streams; pure data.

What must hold together runs as one script: a script stops at its first failing
command, where a MULTI would run the remaining ones; that is what keeps ``REPLAY`` and
``PURGE`` from deleting what they did not copy or count. Every script touches only the
keys of one group, which share a hash tag, so each is valid on Redis Cluster. They are
run by :class:`~eventbus._transports.redis.streams.RedisGroupStore` (``EVALSHA``, then
``EVAL`` when the server lacks the script); the Redis behaviours they rely on are
listed in that module.
"""

from __future__ import annotations

import hashlib

__all__ = ["BACKLOG", "CLAIM", "CREATE", "DEAD_LETTER", "PURGE", "REPLAY", "Script"]


class Script:
    """A Lua script run with ``EVALSHA``, loaded with ``EVAL`` on ``NOSCRIPT``.

    Attributes:
        source: the Lua source.
        sha: its SHA-1, as ``EVALSHA`` names it.
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


# KEYS stream; ARGV group, consumer, min idle ms, count, ids to leave alone... Atomic, so
# that an id XPENDING listed and XCLAIM did not return can only be one whose data is gone
# (XCLAIM skips it, and since 7.0 drops it from the PEL; the XACK does so on older servers).
CLAIM = Script("""
local want, skip = tonumber(ARGV[4]), {}
for i = 5, #ARGV do skip[ARGV[i]] = true end
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', want + #ARGV - 4)
local pending, ids = {}, {}
for _, p in ipairs(rows) do
  if #ids < want and not skip[p[1]] then pending[#pending + 1] = p; ids[#ids + 1] = p[1] end
end
if #ids == 0 then return {{}, {}, {}} end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(ids))
local got, gone = {}, {}
for _, e in ipairs(claimed) do if type(e) == 'table' then got[e[1]] = true end end
for _, id in ipairs(ids) do if not got[id] then gone[#gone + 1] = id end end
if #gone > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(gone)) end
return {pending, claimed, gone}
""")

# KEYS stream, dlq; ARGV group, id, consumer, payload, error, deliveries. Moves the entry
# only while it is pending for this consumer: if another one claimed it meanwhile, that
# one owns it now (acking it here would cut its delivery short). 1 moved, 0 not ours,
# 2 moved with the group gone (nothing left to acknowledge).
DEAD_LETTER = Script("""
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
local missing = type(p) == 'table' and p.err ~= nil
if missing and string.sub(p.err, 1, 7) ~= 'NOGROUP' then return redis.error_reply(p.err) end
if not missing and (#p == 0 or p[1][2] ~= ARGV[3]) then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[4], 'src', ARGV[2], 'err', ARGV[5],
           'n', ARGV[6], 'c', ARGV[3], 'g', ARGV[1])
if missing then return 2 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
""")

# KEYS dlq, stream; ARGV 'ids' id... | 'range' start end count. Each dead letter is
# appended to the stream, then deleted, one at a time: a failure stops the script with
# nothing lost. Returns {moved, last id looked at (or false)}.
REPLAY = Script("""
local moved, last = 0, false
local function move(entry)
  last = entry[1]
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'e' then
      redis.call('XADD', KEYS[2], '*', 'e', f[i + 1])
      redis.call('XDEL', KEYS[1], entry[1])
      moved = moved + 1
      return
    end
  end
end
if ARGV[1] == 'ids' then
  for i = 2, #ARGV do
    local r = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if r[1] then move(r[1]) end
  end
else
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', ARGV[4])) do
    move(e)
  end
end
return {moved, last}
""")

# Shared by the scripts below: the fields of an XINFO reply, and stream id order.
_LUA_COMMON = """
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local function before(a, b)  -- id a < id b; compared as digit strings (ids pass 2^53)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
"""

# KEYS stream; ARGV group, start. XGROUP CREATE ... MKSTREAM, and on Redis 7.0+ the
# group's read counter (entries-read) set to what it starts after: every entry added
# so far for "$"; for an id, the entries trimmed before now plus those still in the
# stream up to the id (counted 1000 at a time). Redis 7.0 leaves the counter nil for
# "$", and a nil counter makes a later loss to retention uncountable. 0 if it existed.
CREATE = Script(
    _LUA_COMMON
    + """
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(made) == 'table' and made.err then
  if string.sub(made.err, 1, 9) == 'BUSYGROUP' then return 0 end
  return redis.error_reply(made.err)
end
local s = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
local added = s['entries-added']
if added == nil then return 1 end  -- before Redis 7.0: no read counters
local read = added
if ARGV[2] ~= '$' then
  local upto, cursor = 0, '-'
  while true do
    local rows = redis.call('XRANGE', KEYS[1], cursor, ARGV[2], 'COUNT', 1000)
    upto = upto + #rows
    if #rows < 1000 then break end
    cursor = '(' .. rows[#rows][1]
  end
  read = added - s['length'] + upto
end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2], 'ENTRIESREAD', read)
return 1
"""
)

# KEYS stream; ARGV group, 'take' | 'peek'. The group's exact backlog (entries after
# its last-delivered id: Redis < 8 reports a stale lag after a trim, redis/redis#13957)
# and what it lost to retention: entries trimmed (or deleted) before it read them,
# (entries-added - entries-read) - backlog. With 'take', the loss is folded into the
# group's read counter (XGROUP SETID at its own id, ENTRIESREAD), so that each loss is
# returned once, to one caller. The backlog is counted from whichever end of the stream
# is nearer the group's id, 1000 entries at a time. Returns {backlog, lost}, lost -1
# when it cannot be counted (Redis < 7.0, or a nil counter: 'take' sets it, counting
# from now on), or false when the stream or the group does not exist.
BACKLOG = Script(
    _LUA_COMMON
    + """
local raw = redis.pcall('XINFO', 'STREAM', KEYS[1])
if type(raw) == 'table' and raw.err then
  if string.find(raw.err, 'no such key', 1, true) then return false end
  return redis.error_reply(raw.err)
end
local s = fields(raw)
local g = nil
for _, row in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = fields(row)
  if f['name'] == ARGV[1] then g = f end
end
if g == nil then return false end
local at, length = g['last-delivered-id'], s['length']
local backlog
if length == 0 or not before(at, s['last-entry'][1]) then
  backlog = 0
elseif before(at, s['first-entry'][1]) then
  backlog = length
else
  local upto, after, low, high = 0, 0, '-', '+'
  while true do
    local rows = redis.call('XRANGE', KEYS[1], low, at, 'COUNT', 1000)
    upto = upto + #rows
    if #rows < 1000 then backlog = length - upto; break end
    low = '(' .. rows[#rows][1]
    rows = redis.call('XREVRANGE', KEYS[1], high, '(' .. at, 'COUNT', 1000)
    after = after + #rows
    if #rows < 1000 then backlog = after; break end
    high = '(' .. rows[#rows][1]
  end
end
local added, read = s['entries-added'], g['entries-read']
if added == nil then return {backlog, -1} end
local gap = read and (added - read - backlog)
if ARGV[2] == 'take' and gap ~= 0 then
  redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], at, 'ENTRIESREAD', added - backlog)
end
if not read then return {backlog, -1} end
return {backlog, math.max(0, gap)}
"""
)

# KEYS dlq. XLEN fails on a key of another type, before anything is deleted.
PURGE = Script("""
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
""")
