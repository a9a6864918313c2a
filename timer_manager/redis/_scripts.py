"""The Lua scripts that keep a namespace's timers on the server, one atomic step each.

Keys of a namespace ``NS`` share the hash tag ``{tm:NS}``, so that a namespace lives in one Redis
Cluster slot and every script may touch all of its keys:

==========  ======  ==================================================================================
``due``     ZSET    pending timers not yet promoted: member = name, score = due time (Unix ms)
``data``    HASH    every pending timer: name -> ``gen|duration|period|missed|origin|payload`` (see
                    ``unpack_timer``; a repeating timer stays here while its event is out)
``fired``   HASH    promoted events not yet acknowledged: name -> the id of the stream entry holding it (``r`` and
                    the id once the consumer that read it has received it)
``seq``     STRING  the generation counter (``INCR``): unique per set, and the order of sets
``wake``    ZSET    one member (``w``) whose score is the earliest due time, moved earlier by a set: the marker
                    that an idle manager blocks on (``BZPOPMIN``; a manager that stops puts it back at score 0, as
                    it may have popped it unseen); and member ``c`` (score 0) when a manager that stopped handed
                    back events it read: the manager that pops it claims them at once
``ev``      STREAM  promoted events, up to ``pack`` per entry (consecutive in promotion order): one field per
                    event, its name, whose value is ``due ms|record`` (the timer's record in ``data`` when it
                    was promoted, payload last); consumer group ``timers``
``gone``    HASH    entry id -> 1 for a stream entry holding an event that was retracted after promotion
                    (by a set, touch or cancel of its name): a consumer checks that entry's events on the
                    server before it hands them over; deleted with the entry's acknowledgement
==========  ======  ==================================================================================

An entry is acknowledged (``XACK``) once every event in it is: the consumer that read it keeps the count,
and an event's own acknowledgement deletes its record in ``fired``. A consumer that takes an entry over
(``XAUTOCLAIM``) keeps the events whose ``fired`` record still names that entry.

Every script reads the server's clock (``TIME``), so managers' clocks never matter. Scores are Unix
milliseconds (exact doubles for 285,000 years); ties within a millisecond are ordered by generation
when promoted, so order is exact however many timers share a millisecond.
"""

from __future__ import annotations

__all__ = ("APPLY", "CLAIM", "FORGET", "KEY_NAMES", "MARKS", "PROMOTE", "QUERY")

KEY_NAMES = ("due", "data", "fired", "seq", "wake", "ev", "gone")

# Shared by the scripts: the server's time in microseconds and in whole milliseconds; and the retraction of a
# name's promoted, unacknowledged event: its record in ``fired`` is deleted, and its stream entry (which other
# events share) marked in ``gone``, so that a consumer checks the entry's events before handing them over.
_PRELUDE = """
local due_key, data_key, fired_key, seq_key, wake_key, ev_key, gone_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now_ms = math.floor(now_us / 1000)

-- A fired record is the entry's id, or ``r`` and the id once the consumer that read it has received it (the
-- retraction of a received event marks nothing: no consumer is to read its entry).
local function retract(name)
    local fired = redis.call('HGET', fired_key, name)
    if fired then
        if string.byte(fired, 1) ~= 114 then redis.call('HSET', gone_key, fired, 1) end
        redis.call('HDEL', fired_key, name)
        return 1
    end
    return 0
end

-- A pending timer's record: its generation, the duration it was last set with (microseconds, for a
-- touch), and for a repeating timer its period (ms), missed-tick policy and grid origin (ms); then the payload.
local RECORD = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$'
-- of an event in a stream entry (due|record): due, duration and payload
local EVENT_FIELDS = '^([^|]*)|[^|]*|([^|]*)|[^|]*|[^|]*|[^|]*|(.*)$'
local function unpack_timer(value)
    return {string.match(value, RECORD)}
end

-- ``redis.call(command, key, ...values)`` (``XACK``: ``key, group, ...values``), at most 1000 values a call
-- (``unpack`` is limited to a few thousand); the replies of a command that answers per value, concatenated.
local function chunked(command, key, values, group)
    local replies, last = {}, #values
    if last <= 1000 and not group then  -- one call: its reply as it is
        if last == 0 then return replies end
        return redis.call(command, key, unpack(values))
    end
    for j = 1, last, 1000 do
        local reply
        if group then
            reply = redis.call(command, key, group, unpack(values, j, math.min(j + 999, last)))
        else
            reply = redis.call(command, key, unpack(values, j, math.min(j + 999, last)))
        end
        if type(reply) == 'table' then
            for k = 1, #reply do replies[#replies + 1] = reply[k] end
        end
    end
    return replies
end

-- The (name, entry id) pairs of APPLY's acknowledgements or checks string, as two lists.
local function pairs_of(packed)
    local names, entries, position = {}, {}, 1
    while position <= #packed do
        local name, entry
        name, entry, position = struct.unpack('>I4c0I4c0', packed, position)
        names[#names + 1] = name
        entries[#entries + 1] = entry
    end
    return names, entries
end

-- Is ``fired`` (a name's value in the fired hash, or false) the record of stream entry ``entry`` (received or not)?
local function is_entry(fired, entry)
    return fired == entry or (fired and fired == 'r' .. entry)
end

-- The due|record of the promoted event of ``name`` in stream entry ``id`` (nil if that entry is gone).
local function event_value(id, name)
    local entry = redis.call('XRANGE', ev_key, id, id)
    if not entry[1] then return nil end
    local fields = entry[1][2]
    for j = 1, #fields, 2 do
        if fields[j] == name then return fields[j + 1] end
    end
    return nil
end

local function pack_timer(gen, duration, period, missed, origin, payload)
    return gen .. '|' .. duration .. '|' .. period .. '|' .. missed .. '|' .. origin .. '|' .. payload
end

local function earliest()
    local first = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
    if first[2] then return tonumber(first[2]) end
    return nil
end
"""

# APPLY(max_timers, group, commands, acks, checks, done, batch, keep, received) -> counts. ``commands`` is one
# string: per command an op byte, then four fields (name, a, b, c), each a 4-byte big-endian length and its bytes
# (one argument for a whole batch: redis-py's packing of arguments costs more per argument than the script's
# unpacking). ``acks`` and ``checks`` are strings of (name, entry id) pairs, each field length-prefixed the same
# way; ``done`` is the stream entries whose every event is now acknowledged (space-separated ids), to XACK. The
# commands:
#   s name delay_us duration_us payload    set, due now + delay (the client took off the time it waited)
#   a name unix_ms  duration_us payload    set, due at an absolute Unix time
#   i name delay_us period_ms|missed payload   repeating timer, first due now + delay
#   t name entry    waited_us -          touch: due now - waited + the duration it was last set with (the
#                                         client's call was ``waited`` ago; ``entry``: that of the name's event
#                                         this manager received and has not yet acknowledged, or empty; a one-shot
#                                         timer whose event is in that entry is not re-armed)
#   r name gen      received_ms entry     re-arm a repeating timer whose event ``gen``, in stream entry ``entry``, was
#                                         received; not once the timer's event is another entry's (promoted again
#                                         since: a re-arm sent twice, the batch the stop cut short, is applied once)
#   c name -        -    -                cancel
#   C -    -        -    -                cancel all
# An acknowledgement deletes its event's record in ``fired`` (if it is still that event's); the entries in
# ``done`` are acknowledged (XACK) and their marks in ``gone`` deleted. ``received`` (name, entry id pairs, as
# ``acks``): one-shot events the consumer received and has not acknowledged, whose ``fired`` records are marked
# (``r`` before the entry id), so that a touch from any manager finds them not pending. Lookups, deletions and XACK
# go to the server in calls of up to 1000 values, not one call each. An acknowledged entry is left in the stream: the
# acknowledged head of the stream is trimmed whole listpack nodes at a time (XTRIM MINID ~), which costs far less
# than an XDEL per entry. A check asks whether a read event is still current (a flag in the result).
# Returns {set, reset, cancelled, retracted, refused, live, a flag per check...}. Acknowledgements and checks
# come after the commands, so that a command the manager applied before a check is applied before it on the
# server too.
# A batch is applied once however often it is sent: a manager whose connection dropped before the reply came
# cannot know whether the server applied its batch, and sends it again. ``batch`` (ARGV[7]) names the batch
# (unique per manager and batch), and KEYS[8] (the manager's own key, in the namespace's slot) holds the last
# batch of commands applied, with its counts, for ``keep`` ms (ARGV[8]): a batch found there is not applied
# again (its counts are returned as they were; acknowledgements and checks, which change nothing twice, are
# made again). Without KEYS[8] every call applies its commands.
APPLY = (
    _PRELUDE
    + """
local max_timers = tonumber(ARGV[1])
local group = ARGV[2]
local batch_key, batch, keep = KEYS[8], ARGV[7], ARGV[8]
local before = earliest()
local set, reset, cancelled, retracted, refused = 0, 0, 0, 0, 0
local valid = {}
local replayed = false
if batch_key and batch and #ARGV[3] > 0 then
    local last = redis.call('GET', batch_key)
    if last then
        local id, a, b, c, d, e = string.match(last, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
        if id == batch then
            replayed = true
            set, reset, cancelled, retracted, refused = tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e)
        end
    end
end

local function next_due(fields, previous, received)
    local period, missed, origin = tonumber(fields[3]), fields[4], tonumber(fields[5])
    local due
    if missed == 'burst' then
        due = previous + period
    elseif missed == 'delay' then
        due = received + period
    else
        due = origin + (math.floor((received - origin) / period) + 1) * period
    end
    if due <= received and missed ~= 'burst' then due = received + 1 end
    return due
end

-- Generations are handed out here and the counter written back once, at the end: the script is atomic.
local seq = nil

local function arm(name, due, duration, period, missed, origin, payload)
    if max_timers > 0 and redis.call('HEXISTS', data_key, name) == 0
            and redis.call('HLEN', data_key) >= max_timers then
        refused = refused + 1
        return
    end
    retracted = retracted + retract(name)
    seq = (seq or tonumber(redis.call('GET', seq_key) or '0')) + 1
    local added = redis.call('HSET', data_key, name, pack_timer(seq, duration, period, missed, origin, payload))
    redis.call('ZADD', due_key, due, name)
    if added == 1 then set = set + 1 else reset = reset + 1 end
end

-- A touch is a set made at its call (``waited`` us ago) with the duration last set, payload kept: a new generation
-- (the order among equal deadlines is the order of sets and touches), and a promoted, unacknowledged event retracted.
local function touch(name, received, waited)
    local value = redis.call('HGET', data_key, name)
    local fields
    if value then
        fields = unpack_timer(value)
    else
        local fired = redis.call('HGET', fired_key, name)  -- a one-shot timer whose event is out
        -- received already (by this manager, or marked so by the one that received it): not pending
        if not fired or fired == received or string.byte(fired, 1) == 114 then return end
        local event = event_value(fired, name)
        if not event then return end
        local _, duration, payload = string.match(event, EVENT_FIELDS)
        fields = {'', duration, '', '', '', payload}
    end
    local due = math.ceil((now_us - waited + tonumber(fields[2])) / 1000)
    local origin = fields[5]
    if fields[3] ~= '' then  -- a repeating timer: its grid moves with it
        origin = tostring(due)
    end
    arm(name, due, fields[2], fields[3], fields[4], origin, fields[6])
end

local commands, position = ARGV[3], 1
if replayed then position = #commands + 1 end
while position <= #commands do
    local op = string.sub(commands, position, position)
    local name, a, b, c
    name, a, b, c, position = struct.unpack('>I4c0I4c0I4c0I4c0', commands, position + 1)
    if op == 's' then
        arm(name, math.ceil((now_us + tonumber(a)) / 1000), b, '', '', '', c)
    elseif op == 'a' then
        arm(name, math.ceil(tonumber(a)), b, '', '', '', c)
    elseif op == 'i' then
        local first = math.ceil((now_us + tonumber(a)) / 1000)
        local bar = string.find(b, '|', 1, true)
        local period = string.sub(b, 1, bar - 1)
        arm(name, first, tostring(tonumber(period) * 1000), period, string.sub(b, bar + 1), tostring(first), c)
    elseif op == 't' then
        touch(name, a, tonumber(b) or 0)  -- b: empty from a manager of a version before it was sent
    elseif op == 'r' then
        local value = redis.call('HGET', data_key, name)
        local fired = c ~= '' and redis.call('HGET', fired_key, name)  -- c: empty from a manager before it was sent
        if value and redis.call('ZSCORE', due_key, name) == false and not (fired and not is_entry(fired, c)) then
            local fields = unpack_timer(value)
            if fields[1] == a then
                redis.call('ZADD', due_key, next_due(fields, tonumber(b), now_ms), name)
            end
        end
    elseif op == 'c' then
        retracted = retracted + retract(name)
        if redis.call('ZREM', due_key, name) == 1 then cancelled = cancelled + 1
        elseif redis.call('HEXISTS', data_key, name) == 1 then cancelled = cancelled + 1 end
        redis.call('HDEL', data_key, name)
    elseif op == 'C' then
        local fired = redis.call('HGETALL', fired_key)
        local marked = {}
        for j = 2, #fired, 2 do
            local id = fired[j]
            if string.byte(id, 1) == 114 then id = string.sub(id, 2) end
            if not marked[id] then
                marked[id] = true
                redis.call('HSET', gone_key, id, 1)
            end
        end
        retracted = retracted + #fired / 2
        cancelled = cancelled + redis.call('HLEN', data_key)
        redis.call('DEL', due_key, data_key, fired_key)
    end
end

if batch_key and batch and #commands > 0 and not replayed then
    redis.call('SET', batch_key, batch .. '|' .. set .. '|' .. reset .. '|' .. cancelled .. '|' .. retracted .. '|'
        .. refused, 'PX', keep)
end

local ack_names, ack_entries = pairs_of(ARGV[4])
if #ack_entries > 0 then
    local fired = chunked('HMGET', fired_key, ack_names)
    local settled = {}
    for j = 1, #ack_names do
        if is_entry(fired[j], ack_entries[j]) then settled[#settled + 1] = ack_names[j] end
    end
    if #settled > 0 then chunked('HDEL', fired_key, settled) end
end
local done = {}
for id in string.gmatch(ARGV[6] or '', '%S+') do done[#done + 1] = id end
if #done > 0 then
    chunked('XACK', ev_key, done, group)
    if redis.call('HLEN', gone_key) > 0 then chunked('HDEL', gone_key, done) end
    if redis.call('EXISTS', ev_key) == 1 then
        -- keep every entry from the oldest one read and not acknowledged, or else from the first not yet read
        local floor = redis.call('XPENDING', ev_key, group)[2]
        if not floor then
            for _, info in ipairs(redis.call('XINFO', 'GROUPS', ev_key)) do
                local fields = {}
                for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
                if fields['name'] == group then
                    local ms, seq = string.match(fields['last-delivered-id'], '^(%d+)-(%d+)$')
                    floor = ms .. '-' .. (tonumber(seq) + 1)
                end
            end
        end
        if floor then redis.call('XTRIM', ev_key, 'MINID', '~', floor) end
    end
end

-- Events the consumer has received (ack "next" or "manual"), not yet acknowledged: their fired records are marked
-- (``r`` before the entry id) if they are still theirs, so that a touch from any manager finds them not pending.
-- After the acknowledgements: a set of HSET is denied under maxmemory only as a script's first write.
local mark_names, mark_entries = pairs_of(ARGV[9] or '')
if #mark_entries > 0 then
    local fired = chunked('HMGET', fired_key, mark_names)
    local marked = {}
    for j = 1, #mark_names do
        if fired[j] == mark_entries[j] then
            marked[#marked + 1] = mark_names[j]
            marked[#marked + 1] = 'r' .. mark_entries[j]
        end
    end
    if #marked > 0 then chunked('HSET', fired_key, marked) end
end

-- A consumer read the event of ``name`` in entry ``entry``: is it still the name's current event? A stale one is
-- never handed to the application; the consumer counts it as acknowledged in its entry.
local check_names, check_entries = pairs_of(ARGV[5])
if #check_entries > 0 then
    local fired = chunked('HMGET', fired_key, check_names)
    for j = 1, #check_names do
        if is_entry(fired[j], check_entries[j]) then valid[j] = 1 else valid[j] = 0 end
    end
end

if seq then redis.call('SET', seq_key, seq) end
local after = earliest()
if after and (not before or after < before) then
    redis.call('ZADD', wake_key, after, 'w')
end
local result = {set, reset, cancelled, retracted, refused, redis.call('HLEN', data_key)}
for j = 1, #valid do result[#result + 1] = valid[j] end
return result
"""
)

# PROMOTE(limit, heartbeat_ms, pack) -> {promoted, next due ms or -1, now us, live, overdue, unacknowledged, then
# the promoted events' lateness as pairs (ms late, how many events)...}
# Promotes the timers due at the latest heartbeat tick (Unix-aligned; at ``now`` without a heartbeat) into the
# stream, in (due, generation) order: ``limit`` of them, and the rest of the last one's millisecond, so that a
# batch ends at a millisecond boundary and the next batch cannot hold an earlier set of the same millisecond.
# Consecutive events share a stream entry, ``pack`` at most: one XADD, one pending entry and one XACK for them all.
PROMOTE = (
    _PRELUDE
    + """
-- The order to promote the batch in: ZRANGE gives it in due order, and ties (one millisecond) go by
-- generation, the order of the sets. Sorted as plain numbers (due offset x generation span + generation
-- offset) when they fit a double exactly: several times faster than through a Lua comparison function.
local function promotion_order(dues, gens)
    local count = #gens
    local order, ordered = {}, true
    for j = 1, count do
        order[j] = j
        if j > 1 and dues[j] == dues[j - 1] and gens[j] < gens[j - 1] then ordered = false end
    end
    if ordered then return order end
    local base, low, high = dues[1], gens[1], gens[1]
    for j = 2, count do
        local gen = gens[j]
        if gen < low then low = gen elseif gen > high then high = gen end
    end
    local span = high - low + 1
    if (dues[count] - base + 1) * span < 9007199254740992 then
        local keys, by_key = {}, {}
        for j = 1, count do
            local key = (dues[j] - base) * span + (gens[j] - low)
            keys[j], by_key[key] = key, j
        end
        table.sort(keys)
        for j = 1, count do order[j] = by_key[keys[j]] end
    else
        table.sort(order, function(x, y)
            if dues[x] ~= dues[y] then return dues[x] < dues[y] end
            return gens[x] < gens[y]
        end)
    end
    return order
end

local limit = tonumber(ARGV[1])
local heartbeat = tonumber(ARGV[2])
local pack = math.min(1000, math.max(1, tonumber(ARGV[3]) or 1))  -- unpack takes a few thousand values
local bound = now_ms
if heartbeat > 0 then bound = now_ms - (now_ms % heartbeat) end
local found = redis.call('ZRANGE', due_key, '-inf', bound, 'BYSCORE', 'LIMIT', 0, limit, 'WITHSCORES')
local count = #found / 2
if count == limit then
    -- end at a millisecond boundary: take the rest of the last millisecond too (its timers come in name order)
    local last = found[#found]
    local taken = 0
    while taken < count and found[2 * (count - taken)] == last do taken = taken + 1 end
    local rest = redis.call('ZRANGE', due_key, last, last, 'BYSCORE', 'LIMIT', taken, -1, 'WITHSCORES')
    for j = 1, #rest do found[2 * count + j] = rest[j] end
    count = count + #rest / 2
end
local late = {}
if count > 0 then
    -- parallel lists (a table per timer costs more): name, due (the score as Redis wrote it, and as a number),
    -- and of the record: generation, repeating (found with plain string.find: a pattern costs several times more)
    local names, due_texts, dues = {}, {}, {}
    for j = 1, count do
        names[j], due_texts[j] = found[2 * j - 1], found[2 * j]
        dues[j] = tonumber(found[2 * j])
    end
    local records = chunked('HMGET', data_key, names)
    local find, sub, byte = string.find, string.sub, string.byte
    local gens, repeating = {}, {}
    for j = 1, count do
        local record = records[j]
        local bar = find(record, '|', 1, true)
        local bar2 = find(record, '|', bar + 1, true)
        gens[j] = tonumber(sub(record, 1, bar - 1))
        repeating[j] = byte(record, bar2 + 1) ~= 124  -- the period (the third field) is not empty
    end
    local order = promotion_order(dues, gens)
    chunked('ZREM', due_key, names)
    local once, fired = {}, {}
    for first = 1, count, pack do
        local last = math.min(first + pack - 1, count)
        local fields = {}
        for k = first, last do
            local j = order[k]
            fields[2 * (k - first) + 1] = names[j]
            fields[2 * (k - first) + 2] = due_texts[j] .. '|' .. records[j]
        end
        local id = redis.call('XADD', ev_key, '*', unpack(fields))
        for k = first, last do
            local j = order[k]
            local name = names[j]
            if not repeating[j] then once[#once + 1] = name end
            fired[2 * k - 1] = name
            fired[2 * k] = id
        end
    end
    -- lateness as (ms late, how many) runs: the batch is in due order
    local previous = nil
    for k = 1, count do
        local due = dues[order[k]]
        if due == previous then
            late[#late] = late[#late] + 1
        else
            late[#late + 1] = now_ms - due
            late[#late + 1] = 1
            previous = due
        end
    end
    if #once > 0 then chunked('HDEL', data_key, once) end
    chunked('HSET', fired_key, fired)
end
local nxt = earliest()
local result = {count, nxt or -1, now_us, redis.call('HLEN', data_key), redis.call('ZCOUNT', due_key, '-inf', now_ms),
    redis.call('HLEN', fired_key)}
for j = 1, #late do result[#result + 1] = late[j] end
return result
"""
)

# CLAIM(group, consumer, min_idle_ms, count, start, ids...) -> {next start, then entry id, name, due|record,
# deliveries...}
# Takes over stream entries (``count`` at most) that another consumer read and did not acknowledge for
# min_idle_ms (XAUTOCLAIM), keeping the events whose ``fired`` record still names the entry (not acknowledged,
# not retracted); an entry with none left is acknowledged. The events kept are checked again with the commands,
# as read ones are. XAUTOCLAIM looks at ten pending entries per entry asked for, from ``start``: the next call
# starts where this one stopped (``0-0`` once the pending list has been gone through), so that idle entries
# behind many that live consumers hold are reached too. With ``ids``, those entries are taken over (XCLAIM) instead:
# a claim whose reply was lost took them for this consumer, which takes them again to get them.
CLAIM = (
    _PRELUDE
    + """
local group, consumer, min_idle, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local claimed
if #ARGV > 5 then  -- these entries (XCLAIM), not the pending list from ``start``
    claimed = {'0-0', redis.call('XCLAIM', ev_key, group, consumer, min_idle, unpack(ARGV, 6))}
else
    claimed = redis.call('XAUTOCLAIM', ev_key, group, consumer, min_idle, ARGV[5] or '0-0', 'COUNT', count)
end
local result = {claimed[1]}
for _, entry in ipairs(claimed[2]) do
    local id, fields = entry[1], entry[2]
    local names = {}
    for j = 1, #fields, 2 do names[#names + 1] = fields[j] end
    local fired = #names > 0 and redis.call('HMGET', fired_key, unpack(names)) or {}
    local deliveries = nil
    for j = 1, #names do
        if is_entry(fired[j], id) then
            if not deliveries then
                local pending = redis.call('XPENDING', ev_key, group, id, id, 1)
                deliveries = pending[1] and pending[1][4] or 1
            end
            for _, value in ipairs({id, names[j], fields[2 * j], deliveries}) do
                result[#result + 1] = value
            end
        end
    end
    if not deliveries then
        redis.call('XACK', ev_key, group, id)
        redis.call('HDEL', gone_key, id)
    end
end
return result
"""
)

# MARKS(group, consumer, after) -> the entries this consumer holds after entry ``after`` that are marked in
# ``gone``. The reader sends it in one round trip behind its XREADGROUP, which it follows on the server: the
# entries just read whose events must be checked before they are handed over.
MARKS = """
local ev_key, gone_key = KEYS[6], KEYS[7]
if redis.call('HLEN', gone_key) == 0 then return {} end
local held = redis.call('XPENDING', ev_key, ARGV[1], '(' .. ARGV[3], '+', 1000000, ARGV[2])
local ids = {}
for j = 1, #held do ids[j] = held[j][1] end
local result = {}
for first = 1, #ids, 1000 do
    local last = math.min(first + 999, #ids)
    local marks = redis.call('HMGET', gone_key, unpack(ids, first, last))
    for j = first, last do
        if marks[j - first + 1] then result[#result + 1] = ids[j] end
    end
end
return result
"""

# FORGET(group, consumer, idle_ms) -> how many consumers it removed from the group: ``consumer`` (a manager that
# stops) and every consumer idle for more than idle_ms (the ones that stopped before), each only if it holds no
# pending entry (XGROUP DELCONSUMER drops a consumer's pending entries, which no other consumer could then take
# over). Atomic: no entry is handed to one of them between the look and the removal. A consumer name left behind
# would stay in the group for ever; a live one removed (idle, holding nothing) is made again by its next read.
FORGET = """
local ev_key = KEYS[6]
local group, consumer, idle_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', ev_key) == 0 then return 0 end
local removed = 0
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', ev_key, group)) do
    local fields = {}
    for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
    if fields['pending'] == 0 and (fields['name'] == consumer or fields['idle'] > idle_ms) then
        redis.call('XGROUP', 'DELCONSUMER', ev_key, group, fields['name'])
        removed = removed + 1
    end
end
return removed
"""

# QUERY(what, name) -> a deadline (ms), a count, or the earliest due time; -1 for none. A deadline goes back as the
# score's text: a Lua number becomes an integer reply, which a deadline past 2**63 ms would overflow.
QUERY = (
    _PRELUDE
    + """
local what = ARGV[1]
if what == 'deadline' then
    local score = redis.call('ZSCORE', due_key, ARGV[2])
    if score then return score end
    if redis.call('HEXISTS', data_key, ARGV[2]) == 1 then
        local fired = redis.call('HGET', fired_key, ARGV[2])
        local event = fired and event_value(fired, ARGV[2])
        if event then return string.match(event, '^[^|]*') end
    end
    return -1
elseif what == 'count' then
    return redis.call('HLEN', data_key)
else
    local first = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
    return first[2] or -1
end
"""
)
