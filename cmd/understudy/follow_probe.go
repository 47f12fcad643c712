package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
)

// storeProbeTimeout bounds follow's start-up request to each store.
const storeProbeTimeout = 30 * time.Second

// probeFollowStores makes one request (a listing of L0) to each follower's
// store before anything runs. Credentials that are missing or refused fail
// the command at once with what to set: a follower would retry them for
// ever, and retrying cannot help. Any other failure (a store that is down)
// is logged and left to the followers, which retry with backoff. The
// newest L0 file's header is read too, so that an age-encrypted replica
// without the identity (or a plaintext one configured for age) fails here,
// for the same reason.
// explain[i] adds to an error of target i what in the config may cause it
// (a ${VAR} that expanded to nothing).
func probeFollowStores(ctx context.Context, targets []follower.Config, explain []func(error) error, log hclog.Logger) error {
	for i, t := range targets {
		err := probeStore(ctx, t.Client)
		name := t.Name
		if name == "" {
			name = t.Path
		}
		switch {
		case errors.Is(err, storage.ErrCredentials):
			return fmt.Errorf("follow %s: %w", name, explain[i](err))
		case agecrypt.IsKeyError(err):
			return fmt.Errorf("follow %s: %w", name, err)
		case err != nil && ctx.Err() == nil:
			log.Warn("the replica store does not answer yet; following will retry", "db", name, "error", err)
		}
	}
	return nil
}

func probeStore(ctx context.Context, client storage.Client) error {
	ctx, cancel := context.WithTimeout(ctx, storeProbeTimeout)
	defer cancel()
	it, err := client.List(ctx, storage.LevelL0, 0)
	if err != nil {
		return err
	}
	defer it.Close()
	if !it.Next() {
		return it.Err()
	}
	_, err = restore.ReadHeader(ctx, client, it.Item())
	return err
}
