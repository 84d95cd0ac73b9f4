#!/bin/sh
# Runs in the guest at boot; one MARK line per result on the serial port.
exec >/dev/ttyS0 2>&1
m() { echo "MARK $*"; }
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
m boot-mount "$(findmnt -n -o FSTYPE /srv/plain)" "$(cat /srv/plain/hello 2>&1)"
journalctl -b -u srv-plain.mount --no-pager -o cat | sed 's/^/MARK journal srv-plain.mount: /'
m enabled-without-config "$(systemctl is-enabled kmsagent.service kmsagent.socket kmsagent-kms.service 2>&1 | tr '\n' ' ')"
for u in kmsagent.service kmsagent.socket kmsagent-kms.service kmsagent-kms.socket; do
  m verify $u "$(systemd-analyze verify /lib/systemd/system/$u 2>&1 | tr '\n' ' ')" rc=$?
done
mkdir -p /etc/kmsagent && cp /usr/share/doc/kmsagent/agent.toml.example /etc/kmsagent/agent.toml
dpkg -i /root/kmsagent.deb >/dev/null 2>&1; m dpkg-i-rc $?
m enabled-with-config "$(systemctl is-enabled kmsagent.service kmsagent.socket kmsagent-kms.service 2>&1 | tr '\n' ' ')"
m active-after-install "$(systemctl is-active kmsagent.service kmsagent.socket 2>&1 | tr '\n' ' ')"
systemctl disable kmsagent.socket kmsagent.service >/dev/null 2>&1
rm /etc/kmsagent/agent.toml

umount /srv/plain; sleep 1
# A mount made in a service with a mount namespace stays in it.
systemd-run --quiet -p Type=oneshot -p RemainAfterExit=yes -p KillMode=process -p ProtectSystem=strict -p ReadWritePaths=/run/kmsagent -p ReadWritePaths=/srv \
  --unit=nstest /usr/sbin/kmsagent mount fuse /srv/cipher /srv/plain
m ns-protectsystem-visible-on-host "$(findmnt -n -o FSTYPE /srv/plain || echo no)" "status=$(systemctl show -p Result --value nstest)"
journalctl -u nstest --no-pager -o cat | tail -3 | sed 's/^/MARK journal nstest: /'
systemctl kill -s KILL nstest; systemctl stop nstest; sleep 1
# The packaged unit's sandbox, with a stand-in for kmsagent run that mounts
# the share and stays: the mount must reach the host and survive restarts.
sed -e 's/^Type=notify/Type=simple/' -e '/^WatchdogSec/d' -e '/^ExecReload/d' -e '/kmsagent.socket/d' -e '/^ConditionPathExists/d' \
  -e 's|^ExecStart=.*|ExecStart=/bin/sh -c "mountpoint -q /srv/plain \|\| /usr/sbin/kmsagent mount fuse /srv/cipher /srv/plain; exec sleep infinity"|' \
  /lib/systemd/system/kmsagent.service > /etc/systemd/system/sandboxtest.service
systemctl daemon-reload
systemctl start sandboxtest
for i in $(seq 40); do findmnt /srv/plain >/dev/null && break; sleep 0.5; done
m sandbox-active "$(systemctl is-active sandboxtest)" "$(journalctl -u sandboxtest --no-pager -o cat | tail -3 | tr '\n' ' ')"
m sandbox-mount-on-host "$(findmnt -n -o FSTYPE /srv/plain || echo no)" "$(cat /srv/plain/hello 2>&1)"
echo written-in-sandbox > /srv/plain/new 2>&1; m sandbox-write "$(cat /srv/plain/new 2>&1)"
w=$(pgrep -f fuse-worker | tr '\n' ,); m worker-cgroup "$(cat /proc/$(pgrep -f fuse-worker | head -1)/cgroup)" caps="$(grep CapBnd /proc/$(pgrep -f fuse-worker | head -1)/status)"
systemctl restart sandboxtest; sleep 2
w2=$(pgrep -f fuse-worker | tr '\n' ,)
m after-restart "$(findmnt -n -o FSTYPE /srv/plain || echo no)" "$(cat /srv/plain/hello 2>&1)" "same-worker=$([ "$w" = "$w2" ] && echo yes || echo no)" "$w $w2"
systemctl stop sandboxtest
m after-stop "$(findmnt -n -o FSTYPE /srv/plain || echo no)"
/usr/sbin/kmsagent umount /srv/plain; m umount-rc $?
dpkg --purge kmsagent >/dev/null 2>&1; m purge-rc $?
m after-purge "keystore=$(test -d /var/lib/kmsagent/kms && echo kept || echo GONE)" "helper=$(test -e /sbin/mount.kmsagent && echo still || echo gone)"
m done
systemctl poweroff -ff
