-- Out of scope (nn/abstain.h, serve/rollout.h): whether the served model's
-- decision on a turn was out of scope, kept with the turn and with the
-- labelling task made from it, whose suggested_label is then the
-- out-of-scope label the decision goes by. Rows from before are in scope.
ALTER TABLE conversation_turns ADD COLUMN out_of_scope boolean NOT NULL DEFAULT false;
ALTER TABLE labeling_tasks ADD COLUMN out_of_scope boolean NOT NULL DEFAULT false;
