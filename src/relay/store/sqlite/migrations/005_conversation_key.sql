-- History by one integer conversation key instead of two indexes (sender, target) on every
-- message: each index a message touches is another B-tree leaf rewritten into the WAL at
-- commit, and with many conversations those leaves are all different. The key is
-- -(group rowid) for a group, (low user id << 32) | high user id for a direct conversation.
ALTER TABLE messages ADD COLUMN conv INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET conv = COALESCE(
    (SELECT -g.id FROM groups g WHERE g.public_id = messages.group_id), 0)
 WHERE group_id IS NOT NULL;
UPDATE messages SET conv = COALESCE(
    (SELECT (MIN(messages.sender_id, u.id) << 32) | MAX(messages.sender_id, u.id)
       FROM users u WHERE u.chat_address = messages.to_target), 0)
 WHERE group_id IS NULL;
CREATE INDEX messages_conv ON messages(conv);
DROP INDEX messages_sender;
DROP INDEX messages_target;

-- Who has a direct conversation with whom (both directions), written once per pair, so the
-- conversation list needs no index over every message's sender.
CREATE TABLE dm_peers (
    user_id     INTEGER NOT NULL,
    peer_id     INTEGER NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO dm_peers (user_id, peer_id)
    SELECT m.sender_id, u.id FROM messages m JOIN users u ON u.chat_address = m.to_target
     WHERE m.group_id IS NULL;
INSERT OR IGNORE INTO dm_peers (user_id, peer_id)
    SELECT u.id, m.sender_id FROM messages m JOIN users u ON u.chat_address = m.to_target
     WHERE m.group_id IS NULL;
