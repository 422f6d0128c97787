package apppass_test

import (
	"context"
	"testing"
	"time"

	"github.com/apppass/apppass"
	"github.com/apppass/apppass/internal/testenv"
)

// TestRemoveContext revokes every password of a context, of all its
// users, over several batches, and nothing of another context.
func TestRemoveContext(t *testing.T) {
	defer apppass.SetRemoveContextBatch(3)()
	svc := newService(t, testenv.Store(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	add := func(u apppass.User, n int) {
		for range n {
			if _, err := svc.Add(ctx, u, apppass.AddRequest{AppScope: "mail", AppName: "p"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	users := []apppass.User{{ContextID: 9, UserID: 1, Login: "a"}, {ContextID: 9, UserID: 2, Login: "b"}, {ContextID: 9, UserID: 3, Login: "c"}}
	add(users[0], 4)
	add(users[1], 3)
	add(users[2], 1)
	other := apppass.User{ContextID: 10, UserID: 1, Login: "other"}
	add(other, 2)

	n, err := svc.RemoveContext(ctx, 9, apppass.ReasonContextDeleted)
	if err != nil || n != 8 {
		t.Fatalf("RemoveContext = %d, %v; want 8", n, err)
	}
	for _, u := range users {
		if ps, _ := svc.List(ctx, u); len(ps) != 0 {
			t.Fatalf("%+v still has %d", u, len(ps))
		}
	}
	if ps, _ := svc.List(ctx, other); len(ps) != 2 {
		t.Fatalf("another context lost passwords: %d left", len(ps))
	}
	if n, err := svc.RemoveContext(ctx, 9, apppass.ReasonContextDeleted); err != nil || n != 0 {
		t.Fatalf("again = %d, %v", n, err)
	}
}
